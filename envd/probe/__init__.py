"""Scripts run inside containers (stdlib only, any Python >= 3.7)."""
