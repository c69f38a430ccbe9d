#!/usr/bin/env bash
# The whole campaign with plain sbatch scripts, chained with --dependency (no submitit needed):
#
#   pack ──┬── cnn_official ─────────────┐
#          ├── cnn_folds (array) ────────┤
#          ├── cnn_augment (array) ──────┼──(afterany)── aggregate
#          ├── wavelet_mpi (MPI + clf) ──┤
#          └── baseline ─────────────────┘
#
#   bash slurm/submit_all.sh --config configs/campaign.yaml --run-dir runs/main [--set section.key=value ...]
#
# It writes RUN_DIR/config.yaml (the config as used, paths absolute), submits every job, prints the
# job ids and returns. Which jobs (folds, presets, wavelet arm) come from the config's `campaign`
# section. `microcal-hpc submit --executor slurm` does the same through submitit (records, status,
# resubmission of failed jobs); this script is for clusters where you want plain sbatch files.
#
# Cluster settings: edit them HERE or set them in the environment.
PARTITION="${PARTITION:-}"            # --partition (empty: the cluster's default)
ACCOUNT="${ACCOUNT:-}"                # --account
QOS="${QOS:-}"                        # --qos
TIME_PACK="${TIME_PACK:-00:20:00}"
TIME_TRAIN="${TIME_TRAIN:-02:00:00}"
TIME_WAVELET="${TIME_WAVELET:-01:00:00}"
TIME_BASELINE="${TIME_BASELINE:-01:00:00}"
TIME_REPORT="${TIME_REPORT:-00:30:00}"
MEM_TRAIN="${MEM_TRAIN:-8G}"          # per CNN job
MEM_OTHER="${MEM_OTHER:-4G}"          # pack, baseline, report
MEM_WAVELET="${MEM_WAVELET:-8G}"      # the whole wavelet job
CPUS_TRAIN="${CPUS_TRAIN:-2}"
CPUS_OTHER="${CPUS_OTHER:-1}"
GRES_TRAIN="${GRES_TRAIN:-}"          # e.g. gpu:1 on a GPU partition
ARRAY_PARALLELISM="${ARRAY_PARALLELISM:-8}"  # %P: array tasks running at once
MPI_PLUGIN="${MPI_PLUGIN:-pmix}"      # srun --mpi of the wavelet job (`srun --mpi=list`)
EXTRA_SBATCH="${EXTRA_SBATCH:-}"      # any further sbatch options for every job, e.g. "--constraint=v100"
# The software: a virtual environment to activate in every job (MICROCAL_VENV), else microcal-hpc on PATH.
MICROCAL_VENV="${MICROCAL_VENV:-}"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { echo "usage: bash slurm/submit_all.sh [--config FILE] [--run-dir DIR] [--set section.key=value ...]" >&2; exit 2; }
submit_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config|--run-dir|--set) [ $# -ge 2 ] || usage; submit_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) usage ;;
  esac
done

if [ -n "$MICROCAL_VENV" ]; then
  # shellcheck disable=SC1091
  source "$MICROCAL_VENV/bin/activate"
fi
MICROCAL="$(command -v microcal-hpc)" || { echo "submit_all.sh: microcal-hpc not on PATH (set MICROCAL_VENV)" >&2; exit 2; }
command -v sbatch >/dev/null || { echo "submit_all.sh: sbatch not found: not on a SLURM cluster?" >&2; exit 2; }

# RUN_DIR CONFIG DATA PACK OFFICIAL CV_FOLDS AUGMENT_PRESETS WAVELET WAVELET_TASKS from the config
eval "$("$MICROCAL" submit --write-config "${submit_args[@]}")"
mkdir -p "$RUN_DIR/logs"

common=(--parsable --open-mode=append)
[ -z "$PARTITION" ] || common+=(--partition="$PARTITION")
[ -z "$ACCOUNT" ] || common+=(--account="$ACCOUNT")
[ -z "$QOS" ] || common+=(--qos="$QOS")
# shellcheck disable=SC2206  # EXTRA_SBATCH is a list of options
[ -z "$EXTRA_SBATCH" ] || common+=($EXTRA_SBATCH)
export RUN_DIR CONFIG DATA MICROCAL_VENV
submit() {  # submit NAME OPTIONS... SCRIPT [ARGS]: print the job id
  local name="$1"; shift
  local out
  out="$(sbatch "${common[@]}" --job-name="mc-$name" "$@")" || { echo "submit_all.sh: sbatch of $name failed" >&2; return 1; }
  echo "${out%%;*}"
}
ids=()
record() { ids+=("$2"); printf '%-14s %s\n' "$1" "$2"; }

dep=()
if [ "$PACK" = 1 ]; then
  id="$(submit pack --time="$TIME_PACK" --cpus-per-task="$CPUS_OTHER" --mem="$MEM_OTHER" \
    --output="$RUN_DIR/logs/%x-%j.out" "$HERE/pack.sbatch")"
  record pack "$id"
  dep=(--dependency="afterok:$id" --kill-on-invalid-dep=yes)
fi
train=("${dep[@]}" --time="$TIME_TRAIN" --cpus-per-task="$CPUS_TRAIN" --mem="$MEM_TRAIN" --requeue)
[ -z "$GRES_TRAIN" ] || train+=(--gres="$GRES_TRAIN")

if [ "$OFFICIAL" = 1 ]; then
  id="$(submit cnn-official "${train[@]}" --output="$RUN_DIR/logs/%x-%j.out" "$HERE/cnn_official.sbatch")"
  record cnn-official "$id"
fi
if [ "$CV_FOLDS" -gt 0 ]; then
  id="$(submit cnn-folds "${train[@]}" --array="0-$((CV_FOLDS - 1))%$ARRAY_PARALLELISM" \
    --export=ALL,FOLDS="$CV_FOLDS" --output="$RUN_DIR/logs/%x-%A_%a.out" "$HERE/cnn_folds.sbatch")"
  record cnn-folds "$id"
fi
read -r -a presets <<< "$AUGMENT_PRESETS"
if [ "${#presets[@]}" -gt 0 ]; then
  id="$(submit cnn-augment "${train[@]}" --array="0-$((${#presets[@]} - 1))%$ARRAY_PARALLELISM" \
    --export=ALL,PRESETS="$AUGMENT_PRESETS" --output="$RUN_DIR/logs/%x-%A_%a.out" "$HERE/cnn_augment.sbatch")"
  record cnn-augment "$id"
fi
if [ "$WAVELET" = 1 ]; then
  id="$(submit wavelet "${dep[@]}" --time="$TIME_WAVELET" --nodes=1 --ntasks="$WAVELET_TASKS" --cpus-per-task=1 \
    --mem="$MEM_WAVELET" --output="$RUN_DIR/logs/%x-%j.out" \
    --export=ALL,MPI_PLUGIN="$MPI_PLUGIN" \
    "$HERE/wavelet_mpi.sbatch" "$RUN_DIR")"
  record wavelet "$id"
fi
id="$(submit baseline "${dep[@]}" --time="$TIME_BASELINE" --cpus-per-task="$CPUS_OTHER" --mem="$MEM_OTHER" \
  --output="$RUN_DIR/logs/%x-%j.out" "$HERE/baseline.sbatch")"
record baseline "$id"

all="$(IFS=:; echo "${ids[*]}")"
id="$(submit aggregate --dependency="afterany:$all" --time="$TIME_REPORT" --cpus-per-task="$CPUS_OTHER" \
  --mem="$MEM_OTHER" --output="$RUN_DIR/logs/%x-%j.out" "$HERE/aggregate.sbatch")"
record aggregate "$id"

echo "submitted ${#ids[@]} jobs for $RUN_DIR; follow them with: squeue -j $(IFS=,; echo "${ids[*]}")"
echo "the report will be $RUN_DIR/report/report.html"
