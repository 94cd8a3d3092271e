"""envd's own stand-in for uv's scripts/packages/built-by-uv package (imports its dependency)."""

import anyio


def greet() -> str:
    return f"built-by-uv with anyio {anyio.__name__}"
