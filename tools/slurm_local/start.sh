#!/usr/bin/env bash
# Start a SLURM cluster on this machine (munged + slurmctld + one slurmd per node) for the tests.
#
# Usage: export MVIT_SLURM_DIR=$(mktemp -d /tmp/mvit-slurm.XXXXXX)   (optional: one is made and printed)
#        bash tools/slurm_local/start.sh        (idempotent: a running cluster in MVIT_SLURM_DIR is left as it is)
#        export SLURM_CONF=$MVIT_SLURM_DIR/slurm.conf   (for sinfo / sbatch / submit.py)
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing. Every file the cluster writes
# (config, munge key and socket, controller state, spool, logs, pid files) lives under MVIT_SLURM_DIR, and its
# ports are free ones picked at the first start (kept in slurm.conf), so two clusters on one host (two CI runs)
# never meet; tools/slurm_local/stop.sh ends the daemons recorded in its pid files and nothing else.
# The last line printed is "export MVIT_SLURM_DIR=... SLURM_CONF=..." (eval-able).
#
# Environment: MVIT_SLURM_DIR (default: a new mktemp -d folder), MVIT_SLURM_NODES (slurmd nodes on this host:
# 1, or 2 named after the host and "localhost", each its own slurmd -N NAME: Debian's slurmd is built with
# multiple-slurmd support), MVIT_SLURM_CTLD_PORT /
# MVIT_SLURM_SLURMD_PORT (default: free ports; node i listens on SLURMD_PORT + i - 1 when given),
# MVIT_SLURM_KILL_WAIT (seconds from SIGTERM to SIGKILL, 30), MVIT_SLURM_START_TIMEOUT (seconds to wait for the
# nodes to be idle, 60).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${MVIT_SLURM_DIR:-}
[ -n "$DIR" ] || DIR=$(mktemp -d "${TMPDIR:-/tmp}/mvit-slurm.XXXXXX")
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
NODES=${MVIT_SLURM_NODES:-1}
KILL_WAIT=${MVIT_SLURM_KILL_WAIT:-30}
START_TIMEOUT=${MVIT_SLURM_START_TIMEOUT:-60}
HOST=$(hostname -s)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

log() { echo "[slurm_local] $*" >&2; }
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
# Every node's state, one word each ("idle idle" once two nodes are up).
node_states() { timeout 10 sinfo -h -N -o %T 2>/dev/null | tr -d '*~#' | tr '\n' ' ' | sed 's/ *$//'; }
# PORT=a port nobody listens on (bash's /dev/tcp: the connection is refused) and not picked before.
taken=" "
pick_port() {
  while :; do
    PORT=$((20000 + RANDOM % 30000))
    [[ "$taken" == *" $PORT "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && continue
    taken+="$PORT "
    return
  done
}

mkdir -p "$DIR"/{munge,state,spool,log,run}
chmod 700 "$DIR/munge"
# A job's tasks find their rank 0 by its node's name (submitit's MASTER_ADDR): every node name must resolve to
# this host without touching /etc/hosts, and two names always do: the host's own and localhost.
[[ "$NODES" =~ ^[12]$ ]] || die "MVIT_SLURM_NODES=$NODES: 1 or 2 (node names must resolve here: $HOST, localhost)"

# --- ports: given, else those of this folder's earlier start (daemons may run on them), else free ones ---
conf_value() { if [ -f "$CONF" ]; then sed -n "s/^$1//p" "$CONF" | head -n1; fi; }
CTLD_PORT=${MVIT_SLURM_CTLD_PORT:-$(conf_value 'SlurmctldPort=')}
[ -n "$CTLD_PORT" ] || { pick_port; CTLD_PORT=$PORT; }
node_names=() node_ports=()
for i in $(seq 1 "$NODES"); do
  if [ "$i" -eq 1 ]; then name=$HOST; else name=localhost; fi
  if [ -n "${MVIT_SLURM_SLURMD_PORT:-}" ]; then
    port=$((MVIT_SLURM_SLURMD_PORT + i - 1))
  else
    port=$(conf_value "NodeName=$name .*Port=" | sed 's/ .*//')
    [ -n "$port" ] || { pick_port; port=$PORT; }
  fi
  node_names+=("$name")
  node_ports+=("$port")
done

# --- config --------------------------------------------------------------------------------------
# Node hardware exactly as slurmd measures it, so the node is never marked INVALID for overstated resources.
hw=$(slurmd -C | head -n1)
node_hw=$(tr ' ' '\n' <<<"$hw" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[ -n "$cpus" ] && [ -n "$mem" ] || die "cannot parse 'slurmd -C' output: $hw"
nodes_conf=""
for i in "${!node_names[@]}"; do
  # Port= last: the port lookup above reads it back from this line.
  nodes_conf+="NodeName=${node_names[$i]} NodeHostname=$HOST NodeAddr=127.0.0.1 $node_hw State=UNKNOWN Port=${node_ports[$i]}\n"
done
node_list=$(IFS=,; echo "${node_names[*]}")
sed -e "s|@STATE_DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
  -e "s|@SLURMD_PORT@|${node_ports[0]}|g" -e "s|@KILL_WAIT@|$KILL_WAIT|g" -e "s|@NODES@|${nodes_conf%\\n}|" \
  -e "s|@NODE_LIST@|$node_list|g" -e "s|@DEF_MEM_PER_CPU@|$((mem / cpus))|g" "$HERE/slurm.conf.in" >"$CONF.new"
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

for name in "${node_names[@]}"; do
  if alive "$DIR/run/slurmd-$name.pid" slurmd; then
    log "slurmd of $name already running (pid $(cat "$DIR/run/slurmd-$name.pid"))"
  elif [ "$NODES" -eq 1 ]; then
    slurmd -f "$CONF"
    log "slurmd of $name started"
  else
    slurmd -f "$CONF" -N "$name"
    log "slurmd of $name started"
  fi
done

# --- wait for the nodes --------------------------------------------------------------------------
up() { [[ " $1 " =~ ^(\ (idle|mixed|allocated|completing))+\ $ ]] && [ "$(wc -w <<<"$1")" -eq "$NODES" ]; }
deadline=$((SECONDS + START_TIMEOUT))
state=$(node_states)
until up "$state"; do
  if [ $SECONDS -ge $deadline ]; then
    tail -n 20 "$DIR"/log/slurmctld.log "$DIR"/log/slurmd-*.log >&2 || true
    die "nodes ${node_list} are '${state:-unreachable}' after ${START_TIMEOUT}s (logs in $DIR/log)"
  fi
  sleep 1
  state=$(node_states)
done
log "cluster up: nodes ${node_list} are $state ($cpus CPUs, ${mem} MB each); state in $DIR"
echo "export MVIT_SLURM_DIR=$DIR SLURM_CONF=$CONF"
