"""built-by-uv (a stand-in)."""
