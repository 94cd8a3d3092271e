from setuptools import Extension, find_packages, setup

setup(
    name="fast",
    version="1.0",
    packages=find_packages(),
    ext_modules=[Extension("fast._speedups", ["fast/_speedups.c"])],
    install_requires=["six"],
)
