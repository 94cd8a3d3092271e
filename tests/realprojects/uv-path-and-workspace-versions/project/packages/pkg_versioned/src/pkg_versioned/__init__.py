"""envd's own module, in the shape of upstream's."""

NAME = "pkg-versioned"
