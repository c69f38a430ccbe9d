#!/usr/bin/env bash
# One entry point for the README's two set-up commands.
#
#   bash scripts/setup.sh main   # install everything, run the main campaign on the real data (local executor)
#   bash scripts/setup.sh test   # install everything, run the test suite
#   bash scripts/setup.sh env    # install everything, run nothing
#
# Idempotent: apt packages already present are not touched, and the virtual environment is
# updated only when requirements.txt, constraints.txt, setup.py or this script change (a stamp file
# records a hash). requirements.txt pins what the project asks for; constraints.txt pins everything
# pip resolves (transitive packages too), so a fresh machine gets the tested environment.
# Environment: MICROCAL_VENV (default: <repo>/.venv), MICROCAL_DATA (default: ../shared/data/Mammography_micro),
# MICROCAL_RUN_DIR (default: <repo>/runs/main), PYTHON (default: python3.11 or python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MICROCAL_VENV:-$REPO/.venv}"
HOROVOD_VERSION=0.28.1
MODE="${1:-env}"
shift || true

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- apt: MPI for mpi4py/Horovod, and the single-node SLURM cluster used by the tests ----------
APT_RUNTIME=(openmpi-bin libopenmpi-dev build-essential)
APT_TEST=(slurm-wlm slurmdbd slurm-wlm-mysql-plugin munge mariadb-server-core mariadb-client-core)
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "setup: apt-get not found; install these yourself: ${missing[*]}" >&2; exit 1; }
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  echo "setup: Python 3.11 is required (TensorFlow 2.15.1 has no wheels for newer Pythons); set PYTHON=" >&2
  exit 1
}

build_venv() {
  local stamp_file="$VENV/.microcal-stamp"
  local stamp
  stamp="$(cat "$REPO/requirements.txt" "$REPO/constraints.txt" "$REPO/setup.py" "$REPO/pyproject.toml" "$REPO/scripts/setup.sh" | sha256sum | cut -c1-16)"
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && [ -x "$VENV/bin/microcal-hpc" ]; then
    # a venv shared by several checkouts (MICROCAL_VENV) must run this checkout's code
    local installed
    installed="$(cd / && "$VENV/bin/python" -c 'import microcal_hpc, os; print(os.path.dirname(os.path.dirname(os.path.realpath(microcal_hpc.__file__))))' 2>/dev/null || true)"
    if [ "$installed" != "$(realpath "$REPO")" ]; then
      log "pointing $VENV at this checkout ($REPO; it ran ${installed:-nothing})"
      "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
    fi
    log "virtual environment $VENV is current"
    return 0
  fi
  local py; py="$(pick_python)"
  log "creating virtual environment $VENV with $py"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade "pip==24.2" "setuptools==72.1.0" "wheel==0.44.0"
  log "pip install -r requirements.txt (TensorFlow first: Horovod builds against it)"
  "$VENV/bin/python" -m pip install -q -r "$REPO/requirements.txt" -c "$REPO/constraints.txt"
  if ! "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
    log "building horovod==$HOROVOD_VERSION from source (3-5 min)"
    MAKEFLAGS=-j2 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
      HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
      "$VENV/bin/python" -m pip install -q --no-build-isolation --no-cache-dir "horovod==$HOROVOD_VERSION"
  fi
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build >&2
  echo "$stamp" > "$stamp_file"
  log "virtual environment ready"
}

apt_install "${APT_RUNTIME[@]}"
[ "$MODE" = "test" ] && apt_install "${APT_TEST[@]}"
build_venv
export PATH="$VENV/bin:$PATH"

case "$MODE" in
  env) ;;
  main)
    DATA="${MICROCAL_DATA:-$REPO/../shared/data/Mammography_micro}"
    RUN_DIR="${MICROCAL_RUN_DIR:-$REPO/runs/main}"
    exec microcal-hpc submit --config "$REPO/configs/campaign.yaml" --executor local \
      --set "data.root=$DATA" --run-dir "$RUN_DIR" "$@"
    ;;
  test)
    cd "$REPO"
    exec bash "$REPO/tests/run_tests.sh" "$@"
    ;;
  *) echo "usage: bash scripts/setup.sh [main|test|env]" >&2; exit 2 ;;
esac
