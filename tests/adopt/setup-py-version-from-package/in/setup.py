from mypkg import __version__
from setuptools import find_packages, setup

setup(
    name="mypkg",
    version=__version__,
    packages=find_packages(),
    install_requires=["six>=1.16"],
)
