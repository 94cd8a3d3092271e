"""envd's own module, in the shape of upstream's: a literal VERSION the build reads."""

VERSION = "0.3.1"
