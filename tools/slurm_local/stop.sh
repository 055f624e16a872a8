#!/usr/bin/env bash
# Stop the test cluster that tools/slurm_local/start.sh started in MVIT_SLURM_DIR (or the folder given).
#
# Usage: bash tools/slurm_local/stop.sh [DIR]   (idempotent: nothing running, nothing done)
#
# Cancels the cluster's jobs (their processes belong to slurmstepd, not to the daemons), then ends every
# slurmd, slurmctld and munged by the pids in DIR/run, checking each pid still runs the expected program.
# Files under DIR are kept for inspection (logs); delete the folder to reset.
set -uo pipefail

DIR=${1:-${MVIT_SLURM_DIR:-}}
if [ -z "$DIR" ]; then
  echo "[slurm_local] error: which cluster? pass its folder or set MVIT_SLURM_DIR (start.sh printed it)" >&2
  exit 2
fi
STOP_TIMEOUT=${MVIT_SLURM_STOP_TIMEOUT:-30}
export SLURM_CONF=$DIR/slurm.conf
export PATH=$PATH:/usr/sbin

log() { echo "[slurm_local] $*"; }

pid_of() {  # pid_of PIDFILE NAME: print the pid when it is alive and runs NAME
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

wait_gone() {  # wait_gone PID SECONDS
  local deadline=$((SECONDS + $2))
  while [ -d "/proc/$1" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  [ ! -d "/proc/$1" ]
}

if pid_of "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null
    deadline=$((SECONDS + STOP_TIMEOUT))
    while [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  fi
fi

for pidfile in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
  [ -e "$pidfile" ] || continue
  daemon=$(basename "$pidfile" .pid)
  daemon=${daemon%%-*}
  if pid=$(pid_of "$pidfile" "$daemon"); then
    kill -TERM "$pid"
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
      log "$daemon (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid"
      wait_gone "$pid" 5
    fi
    log "$(basename "$pidfile" .pid) stopped (pid $pid)"
  else
    log "$(basename "$pidfile" .pid) not running"
  fi
  rm -f "$pidfile"
done
