from setuptools import setup

setup(name="dummy", version="1.0")
