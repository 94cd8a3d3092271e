"""envd's own module in the shape of the upstream one (a greeting and arithmetic)."""


def hello() -> str:
    return "mylib1 says hello"


def add(a: int, b: int) -> int:
    return a + b
