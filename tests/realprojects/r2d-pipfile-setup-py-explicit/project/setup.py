from setuptools import find_packages, setup

# envd's own setup.py, in the shape of repo2docker's tests/venv/pipfile/setup-py-explicit one.
setup(
    name="Dummy",
    version="1.0.0",
    description="Dummy package for testing purposes only",
    packages=find_packages(),
    install_requires=["numpy"],
)
