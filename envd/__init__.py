"""envd: reproducible, pinned container environments for ML projects."""

__version__ = "0.1.0"
