"""Describe the environment this interpreter runs in, as one JSON object on stdout.

Run inside a container of a built image with the environment's own Python:
    /opt/venv/bin/python probe_env.py [ENV_NAME ...]
Stdlib only; must work on any Python >= 3.7. No absolute host paths, times or host names.
"""

import glob
import hashlib
import json
import os
import platform
import re
import subprocess
import sys

try:
    from importlib import metadata
except ImportError:  # Python < 3.8
    metadata = None  # type: ignore[assignment]

CUDA_LIBS = ("libcudart", "libcudnn", "libnccl", "libcublas")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def os_release():
    out = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME"):
                    out[key] = value.strip('"')
    except OSError:
        pass
    return out


def debian_packages():
    try:
        out = subprocess.run(
            [
                "dpkg-query",
                "-W",
                "-f=${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
            check=False,
        ).stdout
    except OSError:
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[3] == "installed":
            rows.append(parts[:3])
    return sorted(rows)


def python_packages():
    if metadata is None:
        return []
    seen = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = canonical(name)
        if key in seen:
            continue
        record = dist.read_text("RECORD")
        digest = hashlib.sha256(record.encode("utf-8")).hexdigest() if record else ""
        seen[key] = [key, dist.version, digest]
    return [seen[k] for k in sorted(seen)]


def cuda_libraries():
    found = set()
    candidates = []
    try:
        out = subprocess.run(
            ["ldconfig", "-p"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
            check=False,
        ).stdout
        candidates += [line.split("=>")[-1].strip() for line in out.splitlines() if "=>" in line]
    except OSError:
        pass
    candidates += glob.glob("/usr/local/cuda*/lib64/*.so*")
    for site in sys.path:
        candidates += glob.glob(os.path.join(site, "nvidia", "*", "lib", "*.so*"))
    for path in candidates:
        base = os.path.basename(path)
        for lib in CUDA_LIBS:
            if base.startswith(lib + ".so"):
                version = base[len(lib) + 4 :] if len(base) > len(lib) + 3 else ""
                found.add((lib, version))
    return [list(item) for item in sorted(found)]


def main(names):
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else ""
    print(
        json.dumps(
            {
                "os_release": os_release(),
                "glibc": (libc or "").split()[-1] if libc else "",
                "arch": platform.machine(),
                "debian_packages": debian_packages(),
                "python": {
                    "version": platform.python_version(),
                    "implementation": platform.python_implementation(),
                    "build": list(platform.python_build()),
                    "compiler": platform.python_compiler(),
                },
                "python_packages": python_packages(),
                "cuda_libraries": cuda_libraries(),
                "env": {name: os.environ.get(name, "") for name in names},
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
