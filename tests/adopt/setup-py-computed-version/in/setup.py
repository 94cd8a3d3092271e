import os
import re

from setuptools import setup

# The shape of many real setup.py files: the version read out of the module at build time.
with open(os.path.join(os.path.abspath("."), "irl.py")) as f:
    version = re.search(r"__version__\s+=\s+\"([\d.]+)\"", f.read()).group(1)

setup(name="irl", version=version, py_modules=["irl"], install_requires=["idna"])
