#!/usr/bin/env bash
# A single-node SLURM on this machine, for trying `harness run --executor slurm` and for
# tests/test_slurm.py: Debian's slurm-wlm and munge, no systemd needed, no accounting database.
#
#   scripts/slurm/start.sh          install (apt) if missing, configure, start; idempotent
#   scripts/slurm/start.sh --stop   stop the daemons this script started
#
# It writes /etc/slurm/slurm.conf for this host (its real CPU count and memory, from
# `slurmd -C`), makes a munge key if there is none, and starts munged, slurmctld and slurmd
# as root. It exits 0 once `sinfo` shows the node idle, or prints one line saying why it
# cannot start and exits 1 (not root, no apt-get, the install failed, a daemon died: see
# its log under /var/log/slurm-harness). An /etc/slurm/slurm.conf that this script did not
# write is never overwritten. Jobs run as the submitting user; KillWait is 5 s so that a
# cancelled job is gone quickly.
set -uo pipefail

MARK="# written by harness scripts/slurm/start.sh"
CONF=/etc/slurm/slurm.conf
STATE=/var/spool/slurm-harness
LOGS=/var/log/slurm-harness
RUN=/run/slurm-harness

fail() { echo "slurm: cannot start: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
    for pid in "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
        alive "$pid" && kill "$(cat "$pid")"
    done
    exit 0
}
[ "${1:-}" = "--stop" ] && stop

[ "$(id -u)" = 0 ] || fail "not root (it installs packages, writes $CONF and starts daemons as root)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get"
    echo "slurm: installing slurm-wlm and munge (apt-get)" >&2
    # bounded: a machine without a reachable mirror fails in minutes, not hours
    apt=(apt-get -qq -o Acquire::Retries=0 -o Acquire::http::Timeout=10 -o Acquire::https::Timeout=10)
    install() { DEBIAN_FRONTEND=noninteractive timeout 900 "${apt[@]}" install -y slurm-wlm munge >/dev/null 2>&1; }
    install || { timeout 300 "${apt[@]}" update >/dev/null 2>&1 && install; } ||
        fail "apt-get install slurm-wlm munge failed (no package mirror reachable?)"
fi

host="$(hostname -s)"
mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN" /etc/slurm || fail "cannot create $STATE, $LOGS or $RUN"

# --- munge: a key, and the daemon (as the munge user, as its package expects)
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
    mungekey --create --keyfile="$key" 2>/dev/null || dd if=/dev/urandom of="$key" bs=1 count=1024 2>/dev/null ||
        fail "cannot create the munge key $key"
fi
chown munge:munge "$key" && chmod 0400 "$key"
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force 2>"$LOGS/munged.start" || fail "munged did not start: $(tail -1 "$LOGS/munged.start")"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged runs but a credential does not round-trip (see /var/log/munge)"
fi

# --- slurm.conf for this host: the node line as slurmd itself sees the hardware
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    grep -q "^NodeName=$host\b" "$CONF" || fail "$CONF exists, was not written by this script and names no node $host"
else
    node="$(slurmd -C 2>/dev/null | head -1)"
    [ -n "$node" ] || fail "slurmd -C did not describe this host"
    # leave the system some memory: the jobs' own requests are checked against RealMemory
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
    node="$(sed "s/RealMemory=[0-9]*/RealMemory=$(( mem * 9 / 10 ))/" <<<"$node")"
    tmp="$(mktemp)"
    cat > "$tmp" <<CONF
$MARK (edit freely; remove this line to keep your edits)
ClusterName=harness
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# no cgroups (containers, no systemd): processes are tracked by their parent pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$(( mem * 9 / 10 / $(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node") ))
SchedulerType=sched/backfill
ReturnToService=2
# a cancelled or timed-out job is killed 5 s after its SIGTERM; ended jobs stay visible
# to squeue for 10 minutes (there is no accounting database for sacct)
KillWait=5
MinJobAge=600
SlurmdTimeout=60
$(sed 's/ UpTime=.*//' <<<"$node") State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    if ! cmp -s "$tmp" "$CONF"; then
        mv "$tmp" "$CONF" && chmod 0644 "$CONF" || fail "cannot write $CONF"
        changed=1
    fi
    rm -f "$tmp"
fi

# --- the daemons (running ones reread a changed slurm.conf)
if [ -n "${changed:-}" ] && alive "$RUN/slurmctld.pid"; then
    scontrol reconfigure >/dev/null 2>&1 || fail "scontrol reconfigure failed after $CONF changed"
fi
if ! alive "$RUN/slurmctld.pid"; then
    slurmctld 2>>"$LOGS/slurmctld.start" || fail "slurmctld did not start: $(tail -1 "$LOGS/slurmctld.start")"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q UP || fail "slurmctld is not answering: $(tail -1 "$LOGS/slurmctld.log" 2>/dev/null)"
if ! alive "$RUN/slurmd.pid"; then
    slurmd 2>>"$LOGS/slurmd.start" || fail "slurmd did not start: $(tail -1 "$LOGS/slurmd.start")"
fi
# a node left down or drained by an earlier start comes back
for _ in $(seq 150); do
    state="$(sinfo -h -n "$host" -o %t 2>/dev/null | head -1)"
    case "$state" in
        idle|mix|alloc) echo "slurm: up (node $host $state, $(sinfo -h -n "$host" -o '%c CPUs, %m MB'))" >&2; exit 0 ;;
        down*|drain*|drng*) scontrol update nodename="$host" state=resume 2>/dev/null ;;
    esac
    sleep 0.2
done
fail "node $host is '${state:-unknown}', not idle: $(tail -1 "$LOGS/slurmd.log" 2>/dev/null)"
