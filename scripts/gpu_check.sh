#!/usr/bin/env bash
# The one command for a GPU (device) machine: envd's real NVML gateway and host model, no daemon.
#
# Runs scripts/gpu_check.py with PYTHONPATH at this repo and writes, under $OUT (at most 8 files,
# none nested; the device tool brings them back):
#   gpu_check.json    raw NVML answers, HostInfo, host fingerprint section + hash, check outcomes,
#                     the `--gpus all` container run (or why not)
#   nvml-report.json  the ENVD_NVML_REPORT replay file (copy it to tests/fixtures/nvml-h200.json)
#   nvidia-smi.txt    `nvidia-smi -L` and a CSV query on the host, to compare with NVML's answers
#   gpu_check.log     everything this script printed
#
# Needs only nvidia-ml-py, pyyaml and packaging (gpu_check.py imports envd.errors,
# envd.gateways.{nvml,projectfiles} and envd.model.{cuda,host,fingerprint,spec,lockfile}; no
# grpcio, protobuf, docker, click). The device image already has all three; wheels in .whl/
# (ignored by .gitignore), if carried, take precedence so envd's own versions are the ones used.
# Make them once, here, at the repo root (Python 3.12 on the device):
#
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl \
#     nvidia-ml-py==13.615.71 PyYAML==6.0.4 packaging==26.4
#
# (about 1 MiB; pins are what `make setup` installs; keep one version of each in .whl/). Then the
# exact device-tool call, from the session's own checkout:
#
#   run(command="PYTHONUNBUFFERED=1 timeout 330 bash scripts/gpu_check.sh",
#       carry=[".whl"], timeout_s=420)
#
# Without .whl/ drop `carry`; the image's packages are used and gpu_check.json says which.
# Locally (no GPU): OUT=/tmp/gc bash scripts/gpu_check.sh --no-docker
# Extra arguments go to gpu_check.py (--no-docker, --docker PATH, --timeout S per docker command).
# The whole run is capped at GPU_CHECK_TIMEOUT seconds (default 300); it exits 0 when the JSON
# was written, whatever the GPU checks said.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/gpu_check_out}"
PY="${PYTHON:-python3}"
WHEELS="${GPU_CHECK_WHEELS:-$REPO/.whl}"
LIMIT="${GPU_CHECK_TIMEOUT:-300}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"

say() { echo "gpu_check.sh: $*" | tee -a "$LOG"; }

start=$(date +%s)
say "repo $REPO, out $OUT, python $(command -v "$PY") ($("$PY" --version 2>&1))"

site=""
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    site="$(mktemp -d /tmp/gpu_check_site.XXXXXX)"
    for name in nvidia-ml-py pyyaml packaging; do
        if timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$site" --find-links "$WHEELS" "$name" \
            >>"$LOG" 2>&1; then
            say "installed $name from $WHEELS"
        else
            say "no usable $name wheel in $WHEELS; using $PY's own"
        fi
    done
else
    say "no wheels in $WHEELS; using $PY's own packages"
fi
export PYTHONPATH="$REPO${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
    echo "# nvidia-smi -L"
    timeout 30 nvidia-smi -L 2>&1 || echo "(nvidia-smi -L failed or is missing: rc $?)"
    echo "# nvidia-smi --query-gpu=index,name,uuid,memory.total,compute_cap,driver_version,mig.mode.current --format=csv"
    timeout 30 nvidia-smi \
        --query-gpu=index,name,uuid,memory.total,compute_cap,driver_version,mig.mode.current \
        --format=csv 2>&1 || echo "(nvidia-smi query failed or is missing: rc $?)"
    echo "# nvidia-smi (CUDA Version line)"
    timeout 30 nvidia-smi 2>&1 | grep -i "cuda version" || echo "(no CUDA Version line)"
} >"$OUT/nvidia-smi.txt"
cat "$OUT/nvidia-smi.txt" >>"$LOG"

left=$((LIMIT - ($(date +%s) - start)))
((left < 30)) && left=30
set -o pipefail
timeout "$left" "$PY" "$REPO/scripts/gpu_check.py" --out "$OUT" "$@" 2>&1 | tee -a "$LOG"
rc=$?
if ((rc != 0)); then
    say "gpu_check.py exited $rc (124: ran past ${left}s)"
fi
[ -s "$OUT/gpu_check.json" ] || say "no gpu_check.json was written"
say "done in $(($(date +%s) - start))s; files: $(ls "$OUT" | tr '\n' ' ')"
exit "$rc"
