#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1 with accounting (munge, MariaDB, slurmdbd, slurmctld, slurmd), for
# the slurm-marked tests and for trying `lfpo-bench sweep --launcher slurm` on a laptop or in a container.
#
#   bash bench/slurm_cluster.sh install        # Debian/Ubuntu packages (root): slurm-wlm munge slurmdbd mariadb-server
#   bash bench/slurm_cluster.sh start [DIR]    # prints the line to export: SLURM_CONF=DIR/slurm.conf
#   bash bench/slurm_cluster.sh stop  [DIR]    # stops only the daemons this script started (their pids in DIR/run)
#
# DIR (default /tmp/lfpo-slurm) holds the configs, state, logs and database of one cluster life; `start` wipes
# it first, so job ids restart at 1 and no old submitit result file can be read as new. Runs as root (the
# daemons run in the foreground under setsid; munged as the munge user, which it insists on).
# Needs free loopback ports 6817-6819 and 3306. What was checked about this set-up: ../shared/ECOSYSTEM.md.
set -euo pipefail
cmd=${1:-}
D=${2:-/tmp/lfpo-slurm}
RUN=$D/run

stop() {
  [ -d "$RUN" ] || return 0
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    f=$RUN/$name.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

wait_for() {  # what, seconds, command...
  local what=$1 n=$2; shift 2
  for _ in $(seq 1 $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm_cluster: $what did not come up; logs in $D/log" >&2
  tail -n 20 "$D"/log/*.log >&2 || true
  stop
  exit 1
}

spawn() {  # name, command... (foreground daemon under setsid; its pid recorded)
  local name=$1; shift
  setsid "$@" >"$D/log/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN/$name.pid"
}

case "$cmd" in
install)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
  ;;
start)
  for b in slurmctld slurmd slurmdbd munged mariadbd sbatch sacctmgr; do
    command -v "$b" >/dev/null || { echo "slurm_cluster: $b not found; run: bash $0 install" >&2; exit 1; }
  done
  [ "$(id -u)" = 0 ] || { echo "slurm_cluster: start needs root (the daemons and munge's key)" >&2; exit 1; }
  stop
  rm -rf "$D"
  mkdir -p "$D"/{state,spool,log,run,db}
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  # munge: its key, a socket folder it owns, and the daemon as the munge user
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge /var/log/munge
  spawn munged runuser -u munge -- munged -F
  wait_for munge 10 munge -n
  # MariaDB on 127.0.0.1 for slurmdbd (its own data folder, socket and pid file)
  mariadb-install-db --user=root --datadir="$D/db" --auth-root-authentication-method=socket >"$D/log/mariadb-install.log" 2>&1
  spawn mariadbd mariadbd --user=root --datadir="$D/db" --socket="$RUN/mysql.sock" --port=3306 --bind-address=127.0.0.1 \
    --pid-file="$RUN/mariadbd.pidfile" --skip-name-resolve
  wait_for mariadb 30 mariadb --socket="$RUN/mysql.sock" -u root -e "select 1"
  mariadb --socket="$RUN/mysql.sock" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat >"$D/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pidfile
LogFile=$D/log/slurmdbd-daemon.log
EOF
  chmod 600 "$D/slurmdbd.conf"
  cat >"$D/slurm.conf" <<EOF
ClusterName=lfpo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pidfile
SlurmdPidFile=$RUN/slurmd.pidfile
SlurmdSpoolDir=$D/spool
StateSaveLocation=$D/state
SlurmctldLogFile=$D/log/slurmctld-daemon.log
SlurmdLogFile=$D/log/slurmd-daemon.log
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$D/slurm.conf
  spawn slurmdbd slurmdbd -D
  wait_for slurmdbd 30 sacctmgr -n list cluster
  sacctmgr -i add cluster lfpo >/dev/null 2>&1 || true
  spawn slurmctld slurmctld -D -i
  wait_for slurmctld 30 scontrol ping
  spawn slurmd slurmd -D
  wait_for slurmd 30 bash -c "sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'"
  echo "export SLURM_CONF=$D/slurm.conf"
  ;;
stop)
  stop
  ;;
*)
  echo "usage: bash $0 install | start [DIR] | stop [DIR]" >&2
  exit 2
  ;;
esac
