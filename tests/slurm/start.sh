#!/usr/bin/env bash
# A single-node SLURM cluster for tests: munge + slurmctld + slurmd on this machine,
# every file (config, state, logs, pid files, munge socket and key) under STATE_DIR.
# Only /etc/slurm/slurm.conf and gres.conf become symlinks to it (stop.sh removes
# them): the executor's job step drops SLURM_CONF before its `srun`, which then reads
# the default location. Existing files there are never replaced. Needs root (slurmd
# runs jobs as their submitting user). Installs slurm-wlm and munge with apt when missing.
#
#   tests/slurm/start.sh STATE_DIR    # then: export SLURM_CONF=STATE_DIR/slurm.conf
#   tests/slurm/stop.sh STATE_DIR
#
# Node: "localhost", all CPUs, 80% of the memory, one pretend GPU (gres.conf points it
# at /dev/null: the scheduler counts it, nothing can compute on it). Partitions: "debug"
# (default) and "gpudebug", both on that node.
set -euo pipefail
STATE=$(realpath -m "${1:?usage: start.sh STATE_DIR}")
# Ports away from the defaults (6817/6818) so a site's own SLURM is not disturbed.
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-16818}

die() { echo "start.sh: $*" >&2; for f in "$STATE"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (slurmd must be able to run jobs as any user)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 120 apt-get update -qq || die "apt-get update failed or took over 2 min"
    timeout 300 apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$STATE.apt.log" 2>&1 \
        || { tail -n 30 "$STATE.apt.log" >&2; die "apt-get install slurm-wlm munge failed or took over 5 min"; }
fi
PLUGINS=$(dirname "$(dpkg -L slurm-wlm-basic-plugins 2>/dev/null | grep -m1 '/select_cons_tres.so$' || true)")
[ "$PLUGINS" != . ] || PLUGINS=/usr/lib/$(uname -m)-linux-gnu/slurm-wlm

mkdir -p "$STATE"/{spool,state}
chmod 755 "$STATE"

# munge: a private daemon, key and socket (a system munged, if any, is left alone).
if [ ! -f "$STATE/munge.key" ]; then
    head -c 1024 /dev/urandom >"$STATE/munge.key"
    chmod 400 "$STATE/munge.key"
fi
munged --force --socket="$STATE/munge.sock" --key-file="$STATE/munge.key" \
    --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log" --seed-file="$STATE/munge.seed" \
    || die "munged did not start"

CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)

cat >"$STATE/slurm.conf" <<CONF
# fmrirecon-test-cluster (tests/slurm/start.sh)
ClusterName=fmrirecontest
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge.sock
PluginDir=$PLUGINS
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database (sacct cannot answer): the workflow polls with squeue, which
# sees finished jobs for MinJobAge seconds. Keep it far above 3x the executor's initial
# status-check delay, or the plugin switches back to sacct.
AccountingStorageType=accounting_storage/none
MinJobAge=600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# Reject jobs no partition can ever run (they would pend forever otherwise).
EnforcePartLimits=ALL
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MessageTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=60 State=UP
PartitionName=gpudebug Nodes=localhost MaxTime=60 State=UP
CONF
# Without File= the node drains ("gres/gpu count too low"); AutoDetect would look for NVML.
cat >"$STATE/gres.conf" <<CONF
# fmrirecon-test-cluster (tests/slurm/start.sh)
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
CONF

mkdir -p /etc/slurm
for f in slurm.conf gres.conf; do
    target=/etc/slurm/$f
    if [ -e "$target" ] && ! grep -qs fmrirecon-test-cluster "$target"; then
        die "$target exists and is not from a previous test cluster: not replacing it"
    fi
    ln -sfn "$STATE/$f" "$target"  # also replaces a dangling link of an earlier run
done

export SLURM_CONF="$STATE/slurm.conf"
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start"
# -N: the node is "localhost" whatever this machine's hostname is.
slurmd -f "$SLURM_CONF" -N localhost || die "slurmd did not start"

for _ in $(seq 60); do
    state=$(timeout 10 sinfo -h -n localhost -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
        idle) echo "SLURM up: SLURM_CONF=$SLURM_CONF"; exit 0 ;;
        drain*|down*|fail*) die "node is $state: $(scontrol show node localhost | grep -i reason)" ;;
    esac
    sleep 1
done
die "node not idle after 60 s (last state: ${state:-none})"
