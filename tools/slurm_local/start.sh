#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (munged + slurmctld + slurmd) for the tests.
#
# Usage: bash tools/slurm_local/start.sh        (idempotent: a running cluster is left as it is)
#        export SLURM_CONF=${MVIT_SLURM_DIR:-/tmp/mvit-slurm}/slurm.conf   (for sinfo / sbatch / submit.py)
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing. Every file the cluster writes
# (config, munge key and socket, controller state, spool, logs, pid files) lives under MVIT_SLURM_DIR;
# tools/slurm_local/stop.sh ends the daemons recorded in its pid files and nothing else.
#
# Environment: MVIT_SLURM_DIR (default /tmp/mvit-slurm), MVIT_SLURM_CTLD_PORT (6817),
# MVIT_SLURM_SLURMD_PORT (6818), MVIT_SLURM_KILL_WAIT (seconds from SIGTERM to SIGKILL, 30),
# MVIT_SLURM_START_TIMEOUT (seconds to wait for the node to be idle, 60).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${MVIT_SLURM_DIR:-/tmp/mvit-slurm}
CTLD_PORT=${MVIT_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${MVIT_SLURM_SLURMD_PORT:-6818}
KILL_WAIT=${MVIT_SLURM_KILL_WAIT:-30}
START_TIMEOUT=${MVIT_SLURM_START_TIMEOUT:-60}
HOST=$(hostname -s)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

log() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] error: $*" >&2; exit 1; }

# --- packages ------------------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }
missing=()
for cmd in slurmctld slurmd sbatch munged; do
  command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  as_root apt-get update -qq || die "apt-get update failed (root or passwordless sudo needed)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null || die "apt-get install of slurm and munge failed"
fi
export PATH=$PATH:/usr/sbin
[ "$(id -u)" -eq 0 ] || die "the daemons run as root here (SlurmUser=root); run this script as root"

# --- helpers -------------------------------------------------------------------------------------
# A pid file names a live daemon only when the process still runs the expected program (pids get reused).
alive() {  # alive PIDFILE NAME
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
node_state() { timeout 10 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 | tr -d '*~#'; }

mkdir -p "$DIR"/{munge,state,spool,log,run}
chmod 700 "$DIR/munge"

# --- config --------------------------------------------------------------------------------------
# Node hardware exactly as slurmd measures it, so the node is never marked INVALID for overstated resources.
hw=$(slurmd -C | head -n1)
node_hw=$(tr ' ' '\n' <<<"$hw" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[ -n "$cpus" ] && [ -n "$mem" ] || die "cannot parse 'slurmd -C' output: $hw"
sed -e "s|@STATE_DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
  -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@KILL_WAIT@|$KILL_WAIT|g" -e "s|@NODE_HW@|$node_hw|g" \
  -e "s|@DEF_MEM_PER_CPU@|$((mem / cpus))|g" "$HERE/slurm.conf.in" >"$CONF.new"
if [ -f "$CONF" ] && ! cmp -s "$CONF" "$CONF.new" && alive "$DIR/run/slurmctld.pid" slurmctld; then
  log "warning: slurm.conf changed while the cluster runs; restart it (stop.sh, start.sh) to apply"
fi
mv "$CONF.new" "$CONF"

# --- daemons -------------------------------------------------------------------------------------
if alive "$DIR/run/munged.pid" munged; then
  log "munged already running (pid $(cat "$DIR/run/munged.pid"))"
else
  [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key"
  chmod 600 "$DIR/munge/munge.key"
  # --force: munged distrusts sockets under world-writable parents such as /tmp; the socket dir itself is 0700.
  munged --force --socket="$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  log "munged started (pid $(cat "$DIR/run/munged.pid"))"
fi

if alive "$DIR/run/slurmctld.pid" slurmctld; then
  log "slurmctld already running (pid $(cat "$DIR/run/slurmctld.pid"))"
else
  # -c: start from a clean controller state (no jobs or node states left over from an earlier cluster).
  slurmctld -c -f "$CONF"
  log "slurmctld started"
fi

if alive "$DIR/run/slurmd.pid" slurmd; then
  log "slurmd already running (pid $(cat "$DIR/run/slurmd.pid"))"
else
  slurmd -f "$CONF"
  log "slurmd started"
fi

# --- wait for the node ---------------------------------------------------------------------------
deadline=$((SECONDS + START_TIMEOUT))
state=$(node_state)
until [[ "$state" =~ ^(idle|mixed|allocated|completing) ]]; do
  if [ $SECONDS -ge $deadline ]; then
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    die "node $HOST is '${state:-unreachable}' after ${START_TIMEOUT}s (logs in $DIR/log)"
  fi
  sleep 1
  state=$(node_state)
done
log "cluster up: node $HOST is $state ($cpus CPUs, ${mem} MB); state in $DIR"
log "use it with: export SLURM_CONF=$CONF"
