#!/usr/bin/env bash
# Stop the cluster that start.sh started from DIR: cancel its jobs, then SIGTERM to every recorded
# PID (slurmd and slurmctld first, MariaDB and munged last), wait, SIGKILL what is left. Safe to call twice.
#
#   bash tests/slurm_cluster/stop.sh DIR
set -uo pipefail

DIR="${1:?usage: stop.sh STATE_DIR}"
PIDS_FILE="$DIR/pids"
[ -f "$PIDS_FILE" ] || { echo "[slurm-cluster] nothing to stop: $PIDS_FILE not found" >&2; exit 0; }
WAIT="${SLURM_CLUSTER_STOP_WAIT:-15}"

alive() {  # running and not a zombie (a dead daemon whose new parent has not reaped it yet)
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# first the jobs: slurmstepd and its processes outlive slurmd, so cancel them while slurmctld listens
CONF="$DIR/etc/slurm.conf"
if [ -f "$CONF" ] && command -v scancel >/dev/null; then
  SLURM_CONF="$CONF" timeout 20 scancel --user="$(id -un)" 2>/dev/null
  end=$((SECONDS + WAIT))
  while [ "$SECONDS" -lt "$end" ] && [ -n "$(SLURM_CONF="$CONF" timeout 10 squeue -h 2>/dev/null)" ]; do
    sleep 0.5
  done
fi

# reverse start order: jobs' daemons before the database and the authentication they need
mapfile -t entries < <(tac "$PIDS_FILE")
for entry in "${entries[@]}"; do
  name="${entry%% *}"; pid="${entry##* }"
  [ -n "$pid" ] || continue
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + WAIT))
    while alive "$pid" && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    if alive "$pid"; then
      echo "[slurm-cluster] $name ($pid) ignored SIGTERM for ${WAIT}s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
done
for entry in "${entries[@]}"; do
  pid="${entry##* }"
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
done
rm -f "$PIDS_FILE"
echo "[slurm-cluster] stopped (state kept in $DIR)" >&2
exit 0
