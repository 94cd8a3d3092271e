# envd's own setup.py, in the shape of six's: setup() takes its version from the module it
# installs (`import six` ... `version=six.__version__`), which only running setup.py gives
# the legacy backend; envd reads the module's literal instead.
try:
    from setuptools import setup
except ImportError:
    from distutils.core import setup

import six

with open("README.rst") as fp:
    long_description = fp.read()

setup(
    name="six",
    version=six.__version__,
    py_modules=["six"],
    description="A stand-in for six, for envd's corpus",
    long_description=long_description,
    python_requires=">=2.7, !=3.0.*, !=3.1.*, !=3.2.*",
)
