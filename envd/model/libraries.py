"""The shared-library check: which libraries the loader would not find for what Python loads.

After the packages step, a script runs in a container of that step's image (no network, nothing
committed): it maps every shared object under site-packages to its distribution (the
`*.dist-info/RECORD` that lists it) and asks `ldd`, which searches as the loader does (RPATH and
RUNPATH with $ORIGIN, LD_LIBRARY_PATH, ld.so.cache, the system folders), what each one needs.

The rule (`judge`):
- Roots are what Python loads: extension modules (`*.cpython-*.so`, `*.abi3.so`, a bare
  `name.so` outside a library folder), and the `lib*.so*` that a distribution with Python code
  of its own keeps in a package folder or its `lib`/`.libs` folder, that no other object
  needs, and whose name (up to `.so`) its own Python code spells out (loaded by ctypes:
  lightgbm's `lib/lib_lightgbm.so`, named in lightgbm/libpath.py; torch's
  `libtorch_global_deps.so`). A library nothing links and no code names (torch's bundled
  `lib/libgfortran.so.5`) is loaded by nothing.
- A soname `ldd` cannot find for a root (its whole closure: ldd lists it) fails the build,
  unless the root's distribution, or one it requires, ships a file of that name (Python code
  preloads those: torch's `_load_global_deps`, the nvidia-* wheels), or the NVIDIA container
  toolkit provides it at run time (libcuda).
- What only other objects miss (optional plugins and transports nothing links: nvshmem's MPI and
  UCX bootstraps, UCX modules) is a note, not a failure.
A file of the same name in another distribution counts for nothing: torch's libgomp does not
serve lightgbm, whose import would fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from packaging.utils import canonicalize_name

# Common sonames wheels leave to the system, and the Debian package that provides each
# (bookworm names; the same in bullseye and trixie unless noted).
SONAME_PACKAGES: dict[str, str] = {
    "libgomp.so.1": "libgomp1",  # OpenMP (lightgbm, xgboost builds, faiss)
    "libGL.so.1": "libgl1",  # OpenGL (opencv-python)
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libglib-2.0.so.0": "libglib2.0-0",  # opencv-python
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libgfortran.so.5": "libgfortran5",  # Fortran runtimes
    "libquadmath.so.0": "libquadmath0",
    "libSM.so.6": "libsm6",  # X11 (opencv, matplotlib backends)
    "libICE.so.6": "libice6",
    "libXext.so.6": "libxext6",
    "libXrender.so.1": "libxrender1",
    "libX11.so.6": "libx11-6",
    "libxcb.so.1": "libxcb1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
    "libatomic.so.1": "libatomic1",
    "libsndfile.so.1": "libsndfile1",  # soundfile
    "libportaudio.so.2": "libportaudio2",  # sounddevice
    "libgdal.so.32": "libgdal32",
    "libgeos_c.so.1": "libgeos-c1v5",
    "libproj.so.25": "libproj25",
    "libpq.so.5": "libpq5",  # psycopg (no -binary)
    "libmariadb.so.3": "libmariadb3",
    "libsqlite3.so.0": "libsqlite3-0",
    "libxml2.so.2": "libxml2",
    "libxslt.so.1": "libxslt1.1",
    "libjpeg.so.62": "libjpeg62-turbo",
    "libpng16.so.16": "libpng16-16",
    "libtiff.so.6": "libtiff6",
    "libzstd.so.1": "libzstd1",
    "liblzma.so.5": "liblzma5",
    "libbz2.so.1.0": "libbz2-1.0",
    "libz.so.1": "zlib1g",
    "libffi.so.8": "libffi8",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libopenblas.so.0": "libopenblas0",
    "libblas.so.3": "libblas3",
    "liblapack.so.3": "liblapack3",
    "libhdf5_serial.so.103": "libhdf5-103-1",
    "libnuma.so.1": "libnuma1",
    "libibverbs.so.1": "libibverbs1",
    "libaio.so.1": "libaio1",
}
# Provided at run time by the NVIDIA container toolkit, never by the image: not missing.
RUNTIME_SONAMES = frozenset({"libcuda.so.1", "libnvidia-ml.so.1", "libnvcuvid.so.1"})

DIST_MARK = "envd-dist"  # NAME VERSION HAS_CODE(0|1) REQUIRES(comma-separated)
OBJECT_MARK = "envd-object"  # PATH DISTRIBUTION("" when no RECORD lists it)
NEEDS_MARK = "envd-needs"  # PATH SONAME TARGET(a site-packages path, "" when not found)
NAMED_MARK = "envd-named"  # PATH: its distribution's Python code spells its name (up to .so)

# Run by the venv's Python with site-packages as argv[1]; prints the lines above. ldd's
# resolutions outside site-packages (the system's) are left out: only the missing and the
# in-package ones matter.
CHECK_SCRIPT = r"""
import csv, os, re, subprocess, sys
site = os.path.realpath(sys.argv[1])
os.chdir(site)
SO = re.compile(r"\.so(\.[0-9]+)*$")
def clean(text):
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
owner = {}
sources = {}  # distribution -> its .py files (RECORD), read only to find library names
for entry in sorted(os.listdir(".")):
    if not entry.endswith(".dist-info"):
        continue
    name, version, requires, code = "", "", [], 0
    try:
        with open(os.path.join(entry, "METADATA"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                value = value.strip()
                if key == "Name":
                    name = value
                elif key == "Version":
                    version = value
                elif key == "Requires-Dist" and not re.search(r"extra\s*==", value):
                    match = re.match(r"[A-Za-z0-9._-]+", value)
                    if match:
                        requires.append(match.group(0))
        with open(os.path.join(entry, "RECORD"), encoding="utf-8", errors="replace") as f:
            for row in csv.reader(f):
                if not row:
                    continue
                path = os.path.normpath(row[0])
                base = os.path.basename(path)
                if base.endswith(".py") and base != "__init__.py":
                    code = 1
                if base.endswith(".py") and not path.startswith(".."):
                    sources.setdefault(name, []).append(path)
                if SO.search(base) and not path.startswith(".."):
                    owner[path] = name
    except (OSError, csv.Error):
        pass
    if name:
        print("envd-dist", clean(name), clean(version), code, clean(",".join(requires)), sep="\t")
for root, dirs, files in os.walk("."):
    dirs.sort()
    for base in sorted(files):
        path = os.path.normpath(os.path.join(root, base))
        if not SO.search(base) or os.path.islink(path) or not os.path.isfile(path):
            continue
        print("envd-object", clean(path), clean(owner.get(path, "")), sep="\t")
        try:
            out = subprocess.run(["ldd", "./" + path], capture_output=True, text=True,
                                 errors="replace", timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] != "=>":
                continue
            if parts[2] == "not":
                print("envd-needs", clean(path), clean(parts[0]), "", sep="\t")
                continue
            target = os.path.realpath(parts[2])
            if target.startswith(site + "/"):
                print("envd-needs", clean(path), clean(parts[0]), target[len(site) + 1:], sep="\t")
# Which lib*.so* its distribution's Python code names (ctypes loads it by that name). Each
# distribution's sources are read once, at most 4 MiB a file and 256 MiB in all.
wanted = {}
for path, name in owner.items():
    base = os.path.basename(path)
    if name and base.startswith("lib") and os.path.isfile(path):
        wanted.setdefault(name, {}).setdefault(base.split(".so")[0].encode(), []).append(path)
budget = 256 << 20
for name, stems in sorted(wanted.items()):
    for source in sources.get(name, []):
        if not stems or budget <= 0:
            break
        try:
            if os.path.islink(source):
                continue
            with open(source, "rb") as f:
                text = f.read(4 << 20)
        except OSError:
            continue
        budget -= len(text)
        for stem in [s for s in stems if s in text]:
            for path in stems.pop(stem):
                print("envd-named", clean(path), sep="\t")
"""

_SO = re.compile(r"\.so(\.[0-9]+)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LIBRARY_FOLDERS = ("lib", "lib64")


@dataclass(frozen=True)
class MissingLibrary:
    distribution: str  # the distribution's name (its METADATA), or the top folder without one
    version: str
    soname: str
    path: str  # the object, relative to site-packages


@dataclass(frozen=True)
class LibraryReport:
    failures: tuple[MissingLibrary, ...]  # what an import would miss
    notes: tuple[MissingLibrary, ...]  # what only objects nothing loads miss


@dataclass(frozen=True)
class _Dist:
    version: str
    has_code: bool
    requires: frozenset[str]


def check_argv(venv: str, site: str) -> list[str]:
    """argv run in a container of the packages step's image."""
    return [f"{venv}/bin/python", "-I", "-c", CHECK_SCRIPT, site]


def is_extension_module(path: str) -> bool:
    """Whether `import` loads this object: `*.cpython-*.so`, `*.abi3.so`, or `name.so` with an
    identifier for a name, outside a library folder (`lib`, `*.libs`) and not `lib*` (those are
    libraries and plugins: opencv's Qt platform plugins under cv2/qt/plugins load only for a
    window)."""
    parts = path.split("/")
    base = parts[-1]
    if not base.endswith(".so"):
        return False
    if ".cpython-" in base or base.endswith(".abi3.so"):
        return True
    stem = base[: -len(".so")]
    folders = parts[:-1]
    in_library_folder = any(f in _LIBRARY_FOLDERS or f.endswith(".libs") for f in folders)
    return bool(_IDENTIFIER.match(stem)) and not stem.startswith("lib") and not in_library_folder


def _ctypes_location(path: str) -> bool:
    """A `lib*.so*` directly in a top-level package, or in a `lib` or `*.libs` folder."""
    parts = path.split("/")
    if not parts[-1].startswith("lib") or len(parts) < 2:
        return False
    folder = parts[-2]
    return len(parts) == 2 or folder in _LIBRARY_FOLDERS or folder.endswith(".libs")


def _top_folder(path: str) -> str:
    """The top-level folder of an object no RECORD names (`scipy.libs/x.so` -> scipy)."""
    top = path.split("/", 1)[0]
    if "/" not in path:
        return top.split(".", 1)[0]
    return top[: -len(".libs")] if top.endswith(".libs") else top


def judge(output: str) -> LibraryReport:
    """The failures and notes the check's output gives under the rule (module docstring)."""
    dists: dict[str, _Dist] = {}
    names: dict[str, str] = {}  # canonical -> as the distribution spells it
    owner: dict[str, str] = {}  # object -> canonical distribution ("" for none)
    needs: dict[str, list[tuple[str, str]]] = {}
    named: set[str] = set()  # libraries their distribution's code names
    for line in output.splitlines():
        parts = line.split("\t")
        if parts[0] == DIST_MARK and len(parts) == 5:
            key = canonicalize_name(parts[1])
            names[key] = parts[1]
            requires = frozenset(canonicalize_name(r) for r in parts[4].split(",") if r)
            dists[key] = _Dist(parts[2], parts[3] == "1", requires)
        elif parts[0] == OBJECT_MARK and len(parts) == 3:
            owner[parts[1]] = canonicalize_name(parts[2]) if parts[2] else ""
            needs.setdefault(parts[1], [])
        elif parts[0] == NEEDS_MARK and len(parts) == 4 and parts[1] in owner:
            needs[parts[1]].append((parts[2], parts[3]))
        elif parts[0] == NAMED_MARK and len(parts) == 2:
            named.add(parts[1])

    ships: dict[str, set[str]] = {}
    for path, dist in owner.items():
        ships.setdefault(dist, set()).add(path.rsplit("/", 1)[-1])

    wanted_by: dict[str, set[str]] = {}  # a soname or an object -> the objects that need it
    for other, wanted in needs.items():
        for soname, target in wanted:
            wanted_by.setdefault(soname, set()).add(other)
            if target:
                wanted_by.setdefault(target, set()).add(other)

    def needed_by_others(path: str) -> bool:
        base = path.rsplit("/", 1)[-1]
        return bool((wanted_by.get(base, set()) | wanted_by.get(path, set())) - {path})

    def is_root(path: str) -> bool:
        if is_extension_module(path):
            return True
        dist = dists.get(owner[path])
        has_code = dist.has_code if dist is not None else False
        return has_code and _ctypes_location(path) and path in named and not needed_by_others(path)

    def excused(path: str, soname: str) -> bool:
        if soname in RUNTIME_SONAMES:
            return True
        dist = owner[path]
        if not dist:
            return False
        loaders = {dist} | (dists[dist].requires if dist in dists else frozenset())
        return any(soname in ships.get(d, ()) for d in loaders if d)

    def missing(path: str, soname: str) -> MissingLibrary:
        dist = owner[path]
        name = names.get(dist, dist) or _top_folder(path)
        version = dists[dist].version if dist in dists else ""
        return MissingLibrary(name, version, soname, path)

    failures: dict[tuple[str, str], MissingLibrary] = {}
    notes: dict[tuple[str, str], MissingLibrary] = {}
    for path in sorted(needs):
        root = is_root(path)
        for soname, target in needs[path]:
            if target or excused(path, soname):
                continue
            found = missing(path, soname)
            chosen = failures if root else notes
            chosen.setdefault((found.distribution, soname), found)
    failed = {soname for _, soname in failures}
    return LibraryReport(
        failures=tuple(failures[k] for k in sorted(failures)),
        notes=tuple(notes[k] for k in sorted(notes) if k[1] not in failed),
    )


def failure_message(
    failures: tuple[MissingLibrary, ...], packages: Mapping[str, str] = SONAME_PACKAGES
) -> str:
    """One line per distribution and library: the Debian package that provides it
    (`packages`: soname -> package), or where to look for one."""
    lines = []
    for m in failures:
        deb = packages.get(m.soname)
        where = f"{m.distribution} needs {m.soname} ({m.path})"
        if deb:
            lines.append(f"{where}: Debian's {deb} provides it")
        else:
            lines.append(
                f"{where}: find the Debian package that provides it at "
                "https://packages.debian.org/search?searchon=contents&mode=filename"
                f"&keywords={m.soname} and add it to `system:` in envd.yaml"
            )
    return "\n".join(lines)


def notes_message(notes: tuple[MissingLibrary, ...], limit: int = 8) -> str:
    """One line for what only objects nothing loads miss, per distribution (a few named)."""
    by_dist: dict[str, list[str]] = {}
    for m in notes:
        by_dist.setdefault(m.distribution, []).append(m.soname)
    parts = []
    for dist, sonames in sorted(by_dist.items()):
        named = ", ".join(sonames[:limit]) + (
            f" and {len(sonames) - limit} more" if len(sonames) > limit else ""
        )
        parts.append(f"{dist} ({named})")
    return (
        "optional objects no extension module loads link libraries the image lacks, "
        "fine unless you load them yourself: " + "; ".join(parts)
    )


def needed_packages(
    failures: tuple[MissingLibrary, ...], packages: Mapping[str, str] = SONAME_PACKAGES
) -> dict[str, tuple[tuple[str, str], ...]]:
    """`name==version` -> ((soname, Debian package), ...) for the failures envd can fix."""
    out: dict[str, set[tuple[str, str]]] = {}
    for m in failures:
        deb = packages.get(m.soname)
        if deb and m.version:
            out.setdefault(f"{canonicalize_name(m.distribution)}=={m.version}", set()).add(
                (m.soname, deb)
            )
    return {k: tuple(sorted(v)) for k, v in out.items()}
