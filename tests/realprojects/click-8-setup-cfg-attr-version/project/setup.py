from setuptools import setup

# envd's own setup.py, in the shape of click 8.0's: the metadata is in setup.cfg, and setup()
# names only the install_requires (literal, with environment markers).
setup(
    name="click",
    install_requires=[
        "colorama; platform_system == 'Windows'",
        "importlib-metadata; python_version < '3.8'",
    ],
)
