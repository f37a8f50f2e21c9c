#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh STATE_DIR started (by their pid files only)
# and remove its /etc/slurm links.
STATE=$(realpath -m "${1:?usage: stop.sh STATE_DIR}")
for name in slurmd slurmctld munged; do
    pidfile="$STATE/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
done
# the /etc/slurm links start.sh made, if they still point here
for f in slurm.conf gres.conf; do
    [ "$(readlink "/etc/slurm/$f")" = "$STATE/$f" ] && rm -f "/etc/slurm/$f"
done
exit 0
