"""envd's own stand-in for click's package: the version assigned literally, as click 8.0
assigns it (setup.cfg reads it with `version = attr: click.__version__`)."""


def echo(message: str) -> None:
    print(message)


__version__ = "8.0.0"
