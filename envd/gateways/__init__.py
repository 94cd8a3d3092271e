"""Gateways: one module per external system (Docker, NVML, watchdog, uv, mmdebstrap, git)."""
