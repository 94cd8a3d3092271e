"""envd's own stand-in for pypa/sampleproject's src/sample/__init__.py (same shape: main)."""

import peppercorn


def main():
    """The `sample` console script."""
    print("sample", peppercorn.__name__)
