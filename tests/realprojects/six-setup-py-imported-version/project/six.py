"""envd's stand-in for six.py: the version assigned literally at the top, as six's is."""

import sys

__version__ = "1.17.0"

PY3 = sys.version_info[0] == 3
