#!/usr/bin/env bash
# Start a real single-node SLURM cluster (slurmctld, slurmd, slurmdbd + MariaDB for sacct, munge)
# with all its state in ONE folder, on private ports, with two fake GPUs. No systemd, no /etc changes.
# Partitions: debug (the default), cpu and gpu. cpu and gpu also hold two configured-but-DOWN nodes
# ghost1-2 (32 CPUs, 128 GB, gpu:4 each): jobs sized for a real GPU cluster (2 nodes, 4 GPUs) are
# accepted and stay pending, so that what they asked for can be read back (scontrol show job); they
# never run. Account "microcal" and QOS "microcal" exist for the user (--account/--qos are kept).
#
#   bash tests/slurm_cluster/start.sh DIR     # prints "export SLURM_CONF=DIR/etc/slurm.conf"
#   export SLURM_CONF=DIR/etc/slurm.conf; sbatch ... ; sacct ...
#   bash tests/slurm_cluster/stop.sh DIR
#
# DIR/pids lists every daemon's PID (stop.sh signals exactly those). DIR/env.sh exports SLURM_CONF.
# Missing Debian packages are installed with apt-get (as root, or through sudo).
# Environment: SLURM_CLUSTER_CPUS (default: nproc), SLURM_CLUSTER_MEM_MB (default: 90% of MemTotal),
# SLURM_CLUSTER_TIMEOUT (seconds to wait for each daemon, default 60).
set -euo pipefail

DIR="${1:?usage: start.sh STATE_DIR}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
TIMEOUT="${SLURM_CLUSTER_TIMEOUT:-60}"
log() { printf '[slurm-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -s "$DIR/pids" ]; then
  die "$DIR/pids exists: a cluster may already run from this folder (stop it with stop.sh $DIR)"
fi

# --- packages ---------------------------------------------------------------------------------
PKGS=(slurm-wlm slurmdbd slurm-wlm-mysql-plugin munge mariadb-server-core mariadb-client-core)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "apt-get not found; install these packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- layout -----------------------------------------------------------------------------------
ETC="$DIR/etc"; RUN="$DIR/run"; LOG="$DIR/log"; STATE="$DIR/state"; SPOOL="$DIR/spool"
MUNGE="$DIR/munge"; DB="$DIR/mysql"; DEV="$DIR/dev"
mkdir -p "$ETC" "$RUN" "$LOG" "$STATE" "$SPOOL" "$MUNGE" "$DB" "$DEV"
chmod 755 "$DIR" "$RUN" "$MUNGE"   # munge: the socket's folder must be accessible to all
: > "$DIR/pids"

NODE="$(hostname -s)"
USER_NAME="$(id -un)"
CPUS="${SLURM_CLUSTER_CPUS:-$(nproc)}"
MEM_MB="${SLURM_CLUSTER_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}"
CLUSTER="microcal"
ACCOUNT="microcal"; QOS="microcal"

# Private ports: four consecutive free ones from a random base (bash /dev/tcp probes listeners), below
# the kernel's ephemeral range, where an outgoing connection (slurmdbd to MariaDB ...) may take a port
# between the probe and the daemon's bind ("Address already in use").
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
for _ in $(seq 50); do
  BASE=$(( 10000 + (RANDOM * 7) % (EPHEMERAL_LOW - 10004) ))
  if port_free "$BASE" && port_free $((BASE + 1)) && port_free $((BASE + 2)) && port_free $((BASE + 3)); then
    break
  fi
done
CTLD_PORT=$BASE; SLURMD_PORT=$((BASE + 1)); DBD_PORT=$((BASE + 2)); MYSQL_PORT=$((BASE + 3))

record_pid() { echo "$1 $2" >> "$DIR/pids"; }
wait_for() {  # wait_for WHAT PID COMMAND...: poll COMMAND until it succeeds; fail if PID died
  local what="$1" pid="$2"; shift 2
  local end=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      die "$what exited during start-up; see $LOG/$what.log"
    fi
    [ "$SECONDS" -lt "$end" ] || die "$what not ready after ${TIMEOUT}s; see $LOG/$what.log"
    sleep 0.2
  done
}

# --- munge ------------------------------------------------------------------------------------
MUNGE_SOCKET="$MUNGE/munge.socket"
mungekey -c -k "$MUNGE/munge.key" -f 2>/dev/null || mungekey --create --keyfile="$MUNGE/munge.key" --force
chmod 600 "$MUNGE/munge.key"
munged -F -f --key-file="$MUNGE/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE/munged.pid" \
  --seed-file="$MUNGE/munged.seed" --log-file="$LOG/munged.log" >"$LOG/munged.out" 2>&1 &
record_pid munged $!
wait_for munged "$!" munge -n -S "$MUNGE_SOCKET"
log "munged ready ($MUNGE_SOCKET)"

# --- MariaDB (for slurmdbd, hence sacct) ------------------------------------------------------
MYSQL_SOCKET="$RUN/mysqld.sock"
if [ ! -d "$DB/data/mysql" ]; then
  mariadb-install-db --no-defaults --datadir="$DB/data" --user="$USER_NAME" \
    --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed; see $LOG/mariadb-install.log"
fi
mariadbd --no-defaults --datadir="$DB/data" --socket="$MYSQL_SOCKET" --port="$MYSQL_PORT" \
  --bind-address=127.0.0.1 --user="$USER_NAME" --pid-file="$RUN/mariadbd.pid" \
  --log-error="$LOG/mariadb.log" --innodb-buffer-pool-size=64M --skip-log-bin \
  >"$LOG/mariadb.out" 2>&1 &
MYSQL_PID=$!
record_pid mariadbd "$MYSQL_PID"
wait_for mariadb "$MYSQL_PID" mariadb --no-defaults --socket="$MYSQL_SOCKET" -e "SELECT 1"
DB_PASS="slurm-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mariadb --no-defaults --socket="$MYSQL_SOCKET" -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
  FLUSH PRIVILEGES;"
log "MariaDB ready (port $MYSQL_PORT)"

# --- configuration ----------------------------------------------------------------------------
for i in 0 1; do
  [ -c "$DEV/nvidia$i" ] || mknod "$DEV/nvidia$i" c 1 3   # fake GPUs: /dev/null-like char devices
done
: > "$ETC/plugstack.conf"
cat > "$ETC/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$DEV/nvidia[0-1]
EOF
cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=$USER_NAME
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"
cat > "$ETC/slurm.conf" <<EOF
# Single-node test cluster written by tests/slurm_cluster/start.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$USER_NAME
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
PlugStackConfig=$ETC/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
NodeName=ghost[1-2] NodeAddr=127.0.0.2 CPUs=32 RealMemory=128000 Gres=gpu:4 State=DOWN Reason=not_a_machine
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$NODE,ghost[1-2] MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE,ghost[1-2] MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$ETC/slurm.conf"
cat > "$DIR/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
EOF

# --- slurmdbd, cluster registration, slurmctld, slurmd ----------------------------------------
# slurmdbd reads slurmdbd.conf from the folder of $SLURM_CONF
slurmdbd -D >"$LOG/slurmdbd.out" 2>&1 &
DBD_PID=$!
record_pid slurmdbd "$DBD_PID"
wait_for slurmdbd "$DBD_PID" bash -c "exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT"
# slurmdbd creates its tables on start; sacctmgr answers once it is ready
wait_for slurmdbd "$DBD_PID" sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
# an account and a QOS of the user's own, so that --account/--qos requests are kept (and can be checked)
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null
sacctmgr -i add qos "$QOS" >/dev/null
sacctmgr -i add user "$USER_NAME" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
sacctmgr -i modify user "$USER_NAME" set qos+="$QOS" >/dev/null
log "slurmdbd ready (port $DBD_PORT), cluster $CLUSTER registered, account $ACCOUNT, qos $QOS"

slurmctld -D -i >"$LOG/slurmctld.out" 2>&1 &
CTLD_PID=$!
record_pid slurmctld "$CTLD_PID"
wait_for slurmctld "$CTLD_PID" scontrol ping
slurmd -D -N "$NODE" >"$LOG/slurmd.out" 2>&1 &
SLURMD_PID=$!
record_pid slurmd "$SLURMD_PID"

node_idle() { sinfo -h -n "$NODE" -o %T | grep -qx idle; }
wait_for slurmd "$SLURMD_PID" node_idle
log "node $NODE idle: $CPUS CPUs, ${MEM_MB} MB, gpu:2 (fake), slurmctld port $CTLD_PORT"
echo "export SLURM_CONF=$SLURM_CONF"
