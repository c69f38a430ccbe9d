#!/usr/bin/env bash
# The whole campaign with plain sbatch scripts, chained with --dependency (no submitit on the cluster side):
#
#   bash slurm/submit_all.sh --config configs/campaign.yaml --run-dir RUN [--set section.key=value ...]
#
# `microcal-hpc submit --write-sbatch` plans the campaign exactly as `microcal-hpc submit --executor slurm`
# does (the same jobs, arrays, dependencies and `campaign.resources` per job type, `campaign.job_resources`,
# `campaign.setup`, `campaign.container`; only what is missing or stale), writes RUN/config.yaml and one
# script per job or job array to RUN/sbatch/, and prints them in submission order. This script submits
# them with sbatch, each after the jobs it waits for (--dependency=afterok:..., the report afterany),
# records each job id in RUN/jobs/ (`microcal-hpc submit --record-sbatch`) and prints the job ids. Logs:
# RUN/logs/<job name>-<job id>.out|.err. Follow the jobs with `microcal-hpc status --run-dir RUN` (it asks
# SLURM about the recorded ids and reads the outputs) or squeue.
#
# Environment: MICROCAL_VENV, a virtual environment to activate here to find `microcal-hpc` (else it must
# be on PATH). The jobs get the environment of this shell (sbatch's default) plus `campaign.setup`.
set -euo pipefail

usage() { echo "usage: bash slurm/submit_all.sh [--config FILE] [--run-dir DIR] [--set section.key=value ...]" >&2; exit 2; }
submit_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config|--run-dir|--set) [ $# -ge 2 ] || usage; submit_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) usage ;;
  esac
done

if [ -n "${MICROCAL_VENV:-}" ]; then
  # shellcheck disable=SC1091
  source "$MICROCAL_VENV/bin/activate"
fi
MICROCAL="$(command -v microcal-hpc)" || { echo "submit_all.sh: microcal-hpc not on PATH (set MICROCAL_VENV)" >&2; exit 2; }
command -v sbatch >/dev/null || { echo "submit_all.sh: sbatch not found: not on a SLURM cluster?" >&2; exit 2; }

# one line per script: UNIT <tab> DEPENDENCY TYPE <tab> UNITS IT WAITS FOR (comma-separated, or -) <tab> SCRIPT
# <tab> ITS JOB KEYS (comma-separated)
plan="$("$MICROCAL" submit --write-sbatch "${submit_args[@]}")" || exit $?
[ -n "$plan" ] || exit 0  # nothing to do (microcal-hpc said so)

declare -A job_id
ids=()
while IFS=$'\t' read -r unit dependency waits_for script keys; do
  run_dir="$(dirname "$(dirname "$script")")"
  deps=()
  if [ "$waits_for" != - ]; then
    for other in ${waits_for//,/ }; do
      deps+=("${job_id[$other]}")
    done
  fi
  opts=(--parsable)
  if [ ${#deps[@]} -gt 0 ]; then
    opts+=(--dependency="$dependency:$(IFS=:; echo "${deps[*]}")" --kill-on-invalid-dep=yes)
  fi
  out="$(sbatch "${opts[@]}" "$script")" || {
    echo "submit_all.sh: sbatch refused $script; cancelling the ${#ids[@]} job(s) submitted before it" >&2
    [ ${#ids[@]} -eq 0 ] || scancel "${ids[@]}"
    exit 1
  }
  job_id[$unit]="${out%%;*}"
  ids+=("${job_id[$unit]}")
  "$MICROCAL" submit --run-dir "$run_dir" --record-sbatch "${job_id[$unit]}" "$keys" \
    || echo "submit_all.sh: could not record job ${job_id[$unit]} ($unit) in $run_dir/jobs; status will read its outputs only" >&2
  printf '%-24s %s\n' "$unit" "${job_id[$unit]}"
done <<< "$plan"

echo "submitted ${#ids[@]} job(s); follow them with: microcal-hpc status --run-dir $run_dir"
echo "the report will be $run_dir/report/report.html"
