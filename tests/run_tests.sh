#!/usr/bin/env bash
# The test suite, as the README's test command and CI run it.
# Extra arguments go to pytest; test paths among them replace the default "tests", e.g.
#   bash tests/run_tests.sh tests/test_pack.py -x        bash tests/run_tests.sh -m "not slurm"
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${MICROCAL_VENV:-$REPO/.venv}"
PY=python
if ! python -c "import microcal_hpc, h5py" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || { echo "run_tests: no virtual environment at $VENV; run: bash scripts/setup.sh test" >&2; exit 1; }
  PY="$VENV/bin/python"
  export PATH="$VENV/bin:$PATH"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg PYTHONHASHSEED=0
targets=(tests)
for a in "$@"; do
  case "$a" in tests/*|*.py|*::*) targets=(); break ;; esac
done
"$PY" -m pytest "${targets[@]}" -ra --durations=25 -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
