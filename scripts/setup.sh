#!/usr/bin/env bash
# Installs what envd needs on a Debian machine, reusing whatever is already there:
#   - a virtualenv (.venv) with envd and its dev tools;
#   - a Docker engine: reused when `docker info` answers, else docker.io is installed and
#     dockerd started in the background (log: /var/log/envd-dockerd.log);
#   - mmdebstrap (Debian base images) and docker-registry (sharing tests);
#   - chromium (the runs report's test renders the page headless);
#   - podman, catatonit, uidmap, slirp4netns (the engine matrix's Podman, tests/integration/podman.py);
#   - /dev/net/tun present and 0666 (Debian's default; rootless Podman's slirp4netns opens it).
# Without root or apt it says what to install and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    say "missing: $*; install these packages (as root: apt-get install $*) and rerun"
    exit 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "installing $* with apt"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. System packages.
missing=()
have mmdebstrap || missing+=(mmdebstrap)
have docker-registry || missing+=(docker-registry)
have chromium || missing+=(chromium)
have podman || missing+=(podman)
have catatonit || missing+=(catatonit)
have newuidmap || missing+=(uidmap)
have slirp4netns || missing+=(slirp4netns)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ! timeout 10 docker info >/dev/null 2>&1 && ! have dockerd; then
  missing+=(docker.io)
fi
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# 1b. /dev/net/tun, for rootless Podman's networks (slirp4netns opens it as the user). udev and
#     devtmpfs make it crw-rw-rw- on Debian; some sandboxes leave it 0600 root, or leave it out.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" = 666 ]; then
  say "/dev/net/tun is there and 0666"
elif [ "$(id -u)" = 0 ]; then
  if [ ! -e /dev/net/tun ]; then
    mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200
  fi
  chmod 0666 /dev/net/tun
  say "/dev/net/tun made 0666 (Debian's default), for rootless Podman's slirp4netns"
else
  say "warning: /dev/net/tun is not 0666 and fixing it needs root; rootless Podman's tests will say so"
fi

# 2. The engine.
if timeout 10 docker info >/dev/null 2>&1; then
  say "reusing the running Docker engine ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
else
  if [ "$(id -u)" != 0 ]; then
    say "no Docker engine answers and starting one needs root: start dockerd, then rerun"
    exit 1
  fi
  say "starting dockerd (log: /var/log/envd-dockerd.log)"
  nohup dockerd >/var/log/envd-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    timeout 5 docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! timeout 10 docker info >/dev/null 2>&1; then
    say "dockerd did not come up; last lines of its log:"
    tail -n 20 /var/log/envd-dockerd.log >&2
    exit 1
  fi
  say "Docker engine $(docker version -f '{{.Server.Version}}') is up"
fi

# 3. The virtualenv.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.envd-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing envd into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # compat mode: a plain .pth path entry, no import-hook finder on every start-up
  .venv/bin/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
  touch "$stamp"
fi
# Byte code for envd's own modules, as a (non-editable) pip install writes it: with
# PYTHONDONTWRITEBYTECODE set, an editable checkout would compile `envctl enter`'s hot path on
# every start (about 10 ms of its 25). Up-to-date files are skipped, so this costs little.
.venv/bin/python -m compileall -q -j 0 cli envd >/dev/null

# 4. An MLflow tracking server for the MLflow bridge's test, in its own virtualenv
#    (.venv-mlflow; envd itself needs no mlflow package). ENVD_SKIP_MLFLOW=1 skips it.
mlflow_stamp=.venv-mlflow/.envd-installed
if [ "${ENVD_SKIP_MLFLOW:-0}" != 1 ] && { [ ! -f "$mlflow_stamp" ] ||
  [ scripts/mlflow-server.txt -nt "$mlflow_stamp" ]; }; then
  say "installing an MLflow server into .venv-mlflow (for tests/integration/test_mlflow_bridge.py)"
  if .venv/bin/uv venv -q --allow-existing -p "$(command -v python3)" .venv-mlflow &&
    VIRTUAL_ENV="$PWD/.venv-mlflow" .venv/bin/uv pip install -q -r scripts/mlflow-server.txt; then
    touch "$mlflow_stamp"
  else
    say "warning: no MLflow server installed; the MLflow bridge's test will say so"
  fi
fi
