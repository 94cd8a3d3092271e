# A stand-in for GitPython's git package, for envd's corpus: upstream keeps this placeholder
# version, which its setup.py's build_py stamps with VERSION when a wheel is built.
import gitdb  # noqa: F401

__version__ = "git"
