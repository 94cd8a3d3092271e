from setuptools import find_packages, setup

from mypkg import __version__

setup(
    name="mypkg",
    version=__version__,
    packages=find_packages(),
    install_requires=["six>=1.16"],
)
