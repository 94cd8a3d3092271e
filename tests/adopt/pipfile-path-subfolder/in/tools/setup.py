from setuptools import setup

setup(name="tools", version="1.0", py_modules=["tools"], install_requires=["attrs"])
