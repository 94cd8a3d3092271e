"""Fingerprints of images and hosts (placeholder for the host hash until fingerprints land)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envd.app import App


def host_section_hash(app: App) -> str:
    return ""
