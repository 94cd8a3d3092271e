"""Tiny, valid wheels written by hand (a zip with METADATA, WHEEL and a correct RECORD)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile


def wheel_bytes(
    name: str,
    version: str,
    *,
    module: str | None = None,
    body: str = "VALUE = 1\n",
    requires: tuple[str, ...] = (),
) -> bytes:
    """The bytes of `{name}-{version}-py3-none-any.whl`, installing module `module` (default:
    the name with `_`) whose __init__.py is `body`; the same arguments give the same bytes."""
    module = module or name.replace("-", "_")
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    files = {
        f"{module}/__init__.py": body,
        f"{dist}/METADATA": metadata,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: envd-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), text)
    return out.getvalue()


def wheel_name(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


def sdist_bytes(name: str, version: str, *, body: str = "VALUE = 1\n") -> bytes:
    """The bytes of `{name}-{version}.tar.gz`, an sdist built with flit_core."""
    import tarfile

    module = name.replace("-", "_")
    top = f"{module}-{version}"
    files = {
        f"{top}/pyproject.toml": (
            '[build-system]\nrequires = ["flit_core>=3.4,<4"]\n'
            'build-backend = "flit_core.buildapi"\n\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\ndescription = "a test"\n'
        ),
        f"{top}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{top}/{module}/__init__.py": body,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()
