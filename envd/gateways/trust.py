"""The host's CA bundle, for tools that reach the network (mounted, never baked in)."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def host_ca_bundle() -> str | None:
    """SSL_CERT_FILE, REQUESTS_CA_BUNDLE, PIP_CERT, else the system bundle; None if none."""
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return str(Path(value).resolve())
    for path in SYSTEM_BUNDLES:
        if Path(path).is_file():
            return str(Path(path).resolve())
    return None
