#!/usr/bin/env bash
# One entry point for installing microcal-hpc, and the README's two set-up commands.
#
#   bash scripts/setup.sh main          # install, then run the main campaign on the real data (local executor)
#   bash scripts/setup.sh test          # install, then run the test suite
#   bash scripts/setup.sh env           # install, run nothing
#   bash scripts/setup.sh gpu           # install the GPU flavour (TensorFlow with CUDA wheels, Horovod with NCCL)
#   bash scripts/setup.sh check [gpu]   # say what this machine has and lacks for an install; change nothing
#
# From the machine it needs Python 3.10 or 3.11 (with its venv module), MPI (mpicc, mpirun, mpi.h) and a C/C++
# compiler with make; for gpu also a CUDA 12 toolkit (nvcc: on PATH, or CUDA_HOME). Whatever is on PATH is
# used as it is (e.g. after `module load openmpi`), without root. What is missing is installed with apt-get
# as root or through password-less sudo; otherwise the script says what to install or load, and stops.
#
# A virtual environment holds one TensorFlow flavour (requirements-cpu.txt or requirements-gpu.txt):
# main, test and env keep the one it has (CPU for a new one); gpu refuses an environment holding the CPU one.
# Idempotent: the environment is updated only when the requirements files, constraints.txt, setup.py,
# pyproject.toml or this script change (a stamp file records a hash). Horovod is built from source once
# per combination of Horovod, TensorFlow, Python, MPI and CUDA/NCCL, and its wheel kept for reuse.
# Environment: MICROCAL_VENV (default: <repo>/.venv), MICROCAL_DATA (default: ../shared/data/Mammography_micro),
# MICROCAL_RUN_DIR (default: <repo>/runs/main), MICROCAL_WHEEL_CACHE (default: ~/.cache/microcal-hpc/wheels),
# PYTHON (default: the first of python3.11, python3.10, python3 that is 3.10 or 3.11). GPU builds also read
# CUDA_HOME, HOROVOD_NCCL_HOME (or HOROVOD_NCCL_INCLUDE + HOROVOD_NCCL_LIB; default: the nvidia-nccl-cu12
# wheel TensorFlow brings) and HOROVOD_BUILD_CUDA_CC_LIST (e.g. 80,90: compile for those GPUs only, faster).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MICROCAL_VENV:-$REPO/.venv}"
WHEEL_CACHE="${MICROCAL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microcal-hpc/wheels}"
HOROVOD_VERSION=0.28.1
CUDA_MAJOR=12   # TensorFlow 2.15.1's GPU build uses CUDA 12 (the nvidia-*-cu12 wheels of requirements-gpu.txt)
APT_TEST=(slurm-wlm slurmdbd slurm-wlm-mysql-plugin munge mariadb-server-core mariadb-client-core)
MODE="${1:-env}"
shift || true

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }
usage() { echo "usage: bash scripts/setup.sh [main|test|env|gpu|check [cpu|gpu]]" >&2; exit 2; }

# --- the machine: Python, MPI and compilers, CUDA --------------------------------------------------
PROBLEMS=()
problem() { PROBLEMS+=("$*"); }

python_ok() {  # a Python 3.10 or 3.11 that can create virtual environments
  case "$("$1" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" in
    3.10|3.11) return 0 ;;
    *) return 1 ;;
  esac
}
find_python() {
  if [ -n "${PYTHON:-}" ]; then
    python_ok "$PYTHON" && echo "$PYTHON"
    return 0
  fi
  local c
  for c in python3.11 python3.10 python3; do
    if command -v "$c" >/dev/null && python_ok "$c"; then echo "$c"; return 0; fi
  done
}
PY=""  # the environment's Python, or the one that creates it
check_python() {
  if [ -x "$VENV/bin/python" ]; then PY="$VENV/bin/python"; log "Python: $PY (existing environment)"; return 0; fi
  PY="$(find_python)"
  if [ -n "$PY" ]; then log "Python: $(command -v "$PY") ($("$PY" -V 2>&1))"; return 0; fi
  local what="no Python 3.10 or 3.11 with its venv module on PATH"
  [ -n "${PYTHON:-}" ] && what="PYTHON=$PYTHON is not a Python 3.10 or 3.11 with its venv module"
  problem "$what (TensorFlow 2.15.1 has wheels for 3.9-3.11): load one (e.g. module load python/3.11), install python3.11-venv, or set PYTHON=/path/to/python3.11"
}

python_headers() {  # Horovod's build compiles against Python.h
  "$PY" -c 'import os, sysconfig; raise SystemExit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}
mpi_compiles() { printf '#include <mpi.h>\nint main(void) { return 0; }\n' | mpicc -x c - -o /dev/null 2>/dev/null; }
system_gaps() {  # one "what is missing|Debian package providing it" line per gap
  command -v cc >/dev/null || echo "a C compiler (cc)|build-essential"
  command -v c++ >/dev/null || echo "a C++ compiler (c++)|build-essential"
  command -v make >/dev/null || echo "make|build-essential"
  command -v mpirun >/dev/null || echo "mpirun|openmpi-bin"
  if ! command -v mpicc >/dev/null; then echo "mpicc|libopenmpi-dev"
  elif command -v cc >/dev/null && ! mpi_compiles; then echo "mpi.h (mpicc cannot build an MPI program)|libopenmpi-dev"
  fi
  if [ -n "$PY" ] && ! python_headers; then
    echo "Python's headers (Python.h of $PY)|python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev"
  fi
}
gap_names() { cut -d'|' -f1 <<<"$1" | paste -sd, - | sed 's/,/, /g'; }
can_apt() { command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; }
apt_install() {
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  log "apt-get install $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
check_system() {
  local gaps; gaps="$(system_gaps)"
  if [ -z "$gaps" ]; then
    log "MPI and compilers from PATH: $(command -v mpicc), $(mpirun --version 2>/dev/null | head -1); no system packages needed"
    return 0
  fi
  local missing pkgs
  missing="$(gap_names "$gaps")"
  pkgs="$(cut -d'|' -f2 <<<"$gaps" | sort -u | paste -sd' ' -)"
  if can_apt; then
    [ "$MODE" = check ] && { log "missing: $missing; set-up would apt-get install $pkgs"; return 0; }
    # shellcheck disable=SC2086  # one word per package
    apt_install $pkgs
    gaps="$(system_gaps)"
    [ -z "$gaps" ] || problem "still missing after apt-get install $pkgs: $(gap_names "$gaps")"
    return 0
  fi
  problem "missing: $missing. Load your cluster's modules (e.g. module load gcc openmpi), or have them installed (Debian/Ubuntu, as root: apt-get install $pkgs; RHEL family: dnf install gcc-c++ make openmpi-devel python3-devel, then module load mpi/openmpi-x86_64), then run this again"
}

nvcc_path() { if [ -n "${CUDA_HOME:-}" ]; then echo "$CUDA_HOME/bin/nvcc"; else command -v nvcc || true; fi; }
cuda_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1; }
check_cuda() {
  local nvcc release; nvcc="$(nvcc_path)"
  if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
    problem "no CUDA toolkit: ${CUDA_HOME:+CUDA_HOME=$CUDA_HOME has no bin/nvcc}${CUDA_HOME:-nvcc is not on PATH and CUDA_HOME is not set}. Building Horovod with NCCL needs a CUDA $CUDA_MAJOR toolkit (nvcc and headers; a GPU and its driver are needed only to run): module load cuda/$CUDA_MAJOR.x, or set CUDA_HOME=/path/to/cuda-$CUDA_MAJOR.x"
    return 0
  fi
  release="$(cuda_release "$nvcc")"
  if [ "${release%%.*}" != "$CUDA_MAJOR" ]; then
    problem "$nvcc is CUDA ${release:-of unknown version}, but TensorFlow 2.15.1 runs on CUDA $CUDA_MAJOR (its nvidia-*-cu$CUDA_MAJOR wheels), so Horovod must be built with a CUDA $CUDA_MAJOR toolkit: module load cuda/$CUDA_MAJOR.x, or set CUDA_HOME=/path/to/cuda-$CUDA_MAJOR.x"
    return 0
  fi
  log "CUDA toolkit: $nvcc (release $release)"
}

# Report every problem at once (one line each); exit 1 if there is any.
preflight() {
  check_python
  check_system
  [ "$FLAVOUR" = gpu ] && [ "${1:-}" != venv-current ] && check_cuda
  if [ ${#PROBLEMS[@]} -gt 0 ]; then
    printf 'setup: %s\n' "${PROBLEMS[@]}" >&2
    exit 1
  fi
}

# --- the virtual environment --------------------------------------------------------------------
venv_flavour() {  # which TensorFlow the environment holds: cpu, gpu, both, or nothing
  [ -x "$VENV/bin/python" ] || return 0
  "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
have = []
for name, flavour in (("tensorflow-cpu", "cpu"), ("tensorflow", "gpu")):
    try:
        md.version(name)
        have.append(flavour)
    except md.PackageNotFoundError:
        pass
print("both" if len(have) == 2 else "".join(have))
EOF
}

venv_stamp() {
  cat "$REPO"/requirements*.txt "$REPO/constraints.txt" "$REPO/setup.py" "$REPO/pyproject.toml" "${BASH_SOURCE[0]}" \
    <(echo "$FLAVOUR") | sha256sum | cut -c1-16
}
venv_current() {
  [ -f "$VENV/.microcal-stamp" ] && [ "$(cat "$VENV/.microcal-stamp")" = "$(venv_stamp)" ] && [ -x "$VENV/bin/microcal-hpc" ]
}

# NCCL for a GPU build of Horovod: the user's HOROVOD_NCCL_* if set, else the nvidia-nccl-cu12 wheel that
# tensorflow[and-cuda] installed. The wheel ships libnccl.so.2 only (Horovod's CMake looks for libnccl.so),
# and the built library must find it at run time from any environment: a relative run path, as TensorFlow's own.
nccl_build_env() {
  if [ -n "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_INCLUDE:-}${HOROVOD_NCCL_LIB:-}" ]; then
    echo "HOROVOD_NCCL_HOME=${HOROVOD_NCCL_HOME:-}"
    echo "HOROVOD_NCCL_INCLUDE=${HOROVOD_NCCL_INCLUDE:-}"
    echo "HOROVOD_NCCL_LIB=${HOROVOD_NCCL_LIB:-}"
    return 0
  fi
  local nccl
  nccl="$("$VENV/bin/python" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null)" || true
  [ -n "$nccl" ] && [ -f "$nccl/include/nccl.h" ] && [ -f "$nccl/lib/libnccl.so.2" ] \
    || die "no NCCL: the nvidia-nccl-cu12 wheel is missing from $VENV and HOROVOD_NCCL_HOME is not set"
  ln -sf libnccl.so.2 "$nccl/lib/libnccl.so"
  echo "HOROVOD_NCCL_INCLUDE=$nccl/include"
  echo "HOROVOD_NCCL_LIB=$nccl/lib"
  echo "HOROVOD_NCCL_LINK=SHARED"
  echo "LDFLAGS=-Wl,-rpath,\$ORIGIN/../../nvidia/nccl/lib${LDFLAGS:+ $LDFLAGS}"
}

horovod_build_env() {  # NAME=value lines for Horovod's source build
  local jobs; jobs="$(nproc)"; [ "$jobs" -gt 8 ] && jobs=8   # each compiler takes ~1 GB
  echo "MAKEFLAGS=${MAKEFLAGS:--j$jobs}"
  printf '%s\n' HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  [ "$FLAVOUR" = gpu ] || return 0
  echo "HOROVOD_GPU_OPERATIONS=NCCL"
  [ -n "${CUDA_HOME:-}" ] && echo "HOROVOD_CUDA_HOME=$CUDA_HOME"
  [ -n "${HOROVOD_BUILD_CUDA_CC_LIST:-}" ] && echo "HOROVOD_BUILD_CUDA_CC_LIST=$HOROVOD_BUILD_CUDA_CC_LIST"
  nccl_build_env
}

# What a built Horovod wheel depends on; a cached wheel is reused only for the same text.
horovod_key() {
  echo "horovod==$HOROVOD_VERSION"
  "$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, os, platform, sys
tf = [f"{n}=={md.version(n)}" for n in ("tensorflow", "tensorflow-cpu", "nvidia-nccl-cu12")
      if n in {d.metadata["Name"].lower() for d in md.distributions()}]
print(f"python {sys.version_info[0]}.{sys.version_info[1]} {platform.machine()} {os.confstr('CS_GNU_LIBC_VERSION')}", *tf)
EOF
  echo "mpi $(command -v mpicc) $(mpirun --version 2>/dev/null | head -1)"
  [ "$FLAVOUR" = gpu ] && echo "cuda $(cuda_release "$(nvcc_path)")"
  grep -v '^LDFLAGS=' <<<"$1" | grep -v '^MAKEFLAGS=' | sed "s|$VENV|VENV|g"
}

install_horovod() {
  local build_env key dir tmp
  build_env="$(horovod_build_env)"
  key="$(horovod_key "$build_env")"
  dir="$WHEEL_CACHE/horovod-$HOROVOD_VERSION-$(sha256sum <<<"$key" | cut -c1-16)"
  if ! compgen -G "$dir/horovod-*.whl" >/dev/null; then
    log "building horovod==$HOROVOD_VERSION ($FLAVOUR) from source: minutes (3-5 on an idle 2-core machine); the wheel is kept in $dir"
    mkdir -p "$WHEEL_CACHE"
    tmp="$(mktemp -d "$WHEEL_CACHE/.build.XXXXXX")"
    local -a env_args; mapfile -t env_args <<<"$build_env"
    if ! env "${env_args[@]}" "$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir \
        -w "$tmp" "horovod==$HOROVOD_VERSION"; then
      rm -rf "$tmp"
      die "building horovod==$HOROVOD_VERSION failed (build settings: $(paste -sd' ' - <<<"$build_env"))"
    fi
    echo "$key" > "$tmp/key.txt"
    chmod 755 "$tmp"   # mktemp made it private; a shared cache is read by others
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"   # another set-up may have finished the same build first
  else
    log "horovod==$HOROVOD_VERSION from the cached wheel in $dir"
  fi
  "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$dir"/horovod-*.whl
}

check_horovod() {
  local need="hvd.mpi_built() and hvd.gloo_built()"
  [ "$FLAVOUR" = gpu ] && need="$need and hvd.nccl_built()"
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import sys, horovod.tensorflow as hvd; sys.exit(not ($need))" \
    || die "Horovod in $VENV is not built with what it needs ($need; see horovodrun --check-build): pip uninstall horovod, delete its wheel under $WHEEL_CACHE, run this again"
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build >&2
}

build_venv() {
  if venv_current; then
    # a venv shared by several checkouts (MICROCAL_VENV) must run this checkout's code
    local installed
    installed="$(cd / && "$VENV/bin/python" -c 'import microcal_hpc, os; print(os.path.dirname(os.path.dirname(os.path.realpath(microcal_hpc.__file__))))' 2>/dev/null || true)"
    if [ "$installed" != "$(realpath "$REPO")" ]; then
      log "pointing $VENV at this checkout ($REPO; it ran ${installed:-nothing})"
      "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
    fi
    log "virtual environment $VENV is current ($FLAVOUR)"
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV with $PY"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel -c "$REPO/constraints.txt"
  log "pip install -r requirements-$FLAVOUR.txt (TensorFlow first: Horovod builds against it)"
  "$VENV/bin/python" -m pip install -q -r "$REPO/requirements-$FLAVOUR.txt" -c "$REPO/constraints.txt"
  if ! TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
    install_horovod
  fi
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
  check_horovod
  venv_stamp > "$VENV/.microcal-stamp"
  log "virtual environment ready ($FLAVOUR): source $VENV/bin/activate"
}

# Debian packages of the tests' single-node SLURM cluster; that cluster needs root anyway.
test_packages() {
  local missing=() p
  for p in "${APT_TEST[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ] && can_apt; then apt_install "${missing[@]}"; missing=(); fi
  if [ ${#missing[@]} -gt 0 ] || [ "$(id -u)" -ne 0 ]; then
    log "warning: the SLURM-cluster tests need root${missing[*]:+ and the Debian packages ${missing[*]}}; here they are skipped or fail (bash tests/run_tests.sh -m 'not slurm' leaves them out)"
  fi
}

# --- main ---------------------------------------------------------------------------------------
WANT=""
case "$MODE" in
  main|test|env) ;;
  gpu) WANT=gpu ;;
  check) WANT="${1:-}"; case "$WANT" in ""|cpu|gpu) ;; *) usage ;; esac ;;
  *) usage ;;
esac
HAVE="$(venv_flavour)"
FLAVOUR="${WANT:-${HAVE:-cpu}}"
[ "$HAVE" = both ] && die "$VENV holds both tensorflow and tensorflow-cpu, which overwrite each other's files: delete it and run this again"
if [ -n "$HAVE" ] && [ "$HAVE" != "$FLAVOUR" ]; then
  die "$VENV holds the $HAVE flavour of TensorFlow; the $FLAVOUR flavour needs an environment of its own: MICROCAL_VENV=$REPO/.venv-$FLAVOUR bash scripts/setup.sh ${MODE/check/check $FLAVOUR} (or delete $VENV)"
fi

if [ "$MODE" = check ]; then
  preflight
  log "ready for the $FLAVOUR flavour"
  exit 0
fi
if venv_current; then preflight venv-current; else preflight; fi
[ "$MODE" = test ] && test_packages
build_venv
export PATH="$VENV/bin:$PATH"

case "$MODE" in
  env|gpu) ;;
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
esac
