#!/usr/bin/env bash
# Stop the GPU Commons Slurm cluster started by up.sh. Idempotent.
#
#   deploy/slurm/down.sh            # stop slurmrestd, slurmd (+ job steps), slurmctld, slurmdbd, munged
#   deploy/slurm/down.sh --purge    # also delete all cluster state: job state, logs, shared dir,
#                                   # JWT key, configs and the slurm_acct_db database
#   deploy/slurm/down.sh --version 24.11 [--purge]
#                                   # the same for the 24.11 cluster (the build in /opt stays)
#
# MariaDB is left running; Unix users are kept.
set -euo pipefail

PURGE=0
VERSION=22.05
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=1; shift ;;
        --version) VERSION=${2:-}; shift 2 || { echo "down.sh: --version needs 22.05 or 24.11" >&2; exit 2; } ;;
        --version=*) VERSION=${1#--version=}; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "down.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# As in up.sh: each cluster's own root, conf dir, binaries, node and database.
case "$VERSION" in
    22.05)
        ROOT=${GPUC_SLURM_ROOT:-/var/lib/gpucommons-slurm}; CONF_DIR=/etc/slurm
        SBIN=/usr/sbin; BIN=/usr/bin; HOST=$(hostname -s)
        DB_NAME=slurm_acct_db; DB_USER=slurm; OTHER_RUN=/var/lib/gpucommons-slurm-24.11/run ;;
    24.11)
        ROOT=${GPUC_SLURM_2411_ROOT:-/var/lib/gpucommons-slurm-24.11}; CONF_DIR=/etc/slurm-24.11
        SBIN=/opt/slurm-24.11/sbin; BIN=/opt/slurm-24.11/bin; HOST=gpuc2411
        DB_NAME=slurm_acct_db_2411; DB_USER=slurm2411; OTHER_RUN=/var/lib/gpucommons-slurm/run ;;
    *) echo "down.sh: unknown --version $VERSION (known: 22.05, 24.11)" >&2; exit 2 ;;
esac
RUN=$ROOT/run
export SLURM_CONF=$CONF_DIR/slurm.conf
[ "$(id -u)" = 0 ] || { echo "down.sh: must run as root" >&2; exit 1; }

say() { echo "[down.sh] $*" >&2; }

# running PID -> 0 if PID exists and is not a zombie (PID 1 here may reap late)
running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

pid_of() {  # PIDFILE COMM -> prints pid if alive and named COMM
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && running "$pid" && echo "$pid"
}

stop() {  # PIDFILE COMM
    local pid
    if pid=$(pid_of "$1" "$2"); then
        say "stopping $2 (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            running "$pid" || break
            sleep 0.1
        done
        running "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

stop "$RUN/slurmrestd.pid" slurmrestd
# Drain the node so nothing new starts, then cancel running jobs through Slurm
# (recorded as CANCELLED in accounting). Pending jobs stay queued in the saved
# state; up.sh resumes the node and they start then.
if [ -f "$SLURM_CONF" ] && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    "$BIN/scontrol" update nodename="$HOST" state=drain reason=down.sh >/dev/null 2>&1 || true
    active=$("$BIN/squeue" -h -t RUNNING,COMPLETING -o %i 2>/dev/null || true)
    if [ -n "$active" ] && pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
        say "cancelling running jobs: $(echo $active)"
        "$BIN/scancel" -t RUNNING >/dev/null 2>&1 || true
        for _ in $(seq 1 75); do
            [ -z "$("$BIN/squeue" -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi
stop "$RUN/slurmd.pid" slurmd
# Job steps outlive slurmd; if any are left (e.g. slurmctld was already down),
# end them and every process below them so no job keeps running. Only
# slurmstepd processes (they exist only for this cluster's jobs) and their
# descendants are touched.
descendants() {  # PID... -> the PIDs and all their descendants
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            n = split(roots, q, " "); i = 1
            while (i <= n) { p = q[i++]; print p; m = split(kids[p], c, " ");
                             for (j = 1; j <= m; j++) q[++n] = c[j] }
        }'
}
# Only this cluster's steps: the other cluster's slurmstepd runs another binary.
steps=$(for pid in $(pgrep -x slurmstepd || true); do
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$SBIN/slurmstepd" ]; then echo "$pid"; fi
done)
if [ -n "$steps" ]; then
    # shellcheck disable=SC2086
    victims=$(descendants $steps | sort -un)
    say "ending leftover job steps and their processes: $(echo $victims)"
    # shellcheck disable=SC2086
    kill -TERM $victims 2>/dev/null || true
    sleep 1
    # shellcheck disable=SC2086
    kill -KILL $victims 2>/dev/null || true
fi
stop "$RUN/slurmctld.pid" slurmctld
stop "$RUN/slurmdbd.pid" slurmdbd
# munged serves both clusters: it stays while the other one runs.
pid_of "$OTHER_RUN/slurmctld.pid" slurmctld >/dev/null || stop /run/munge/munged.pid munged

if [ $PURGE = 1 ]; then
    say "purging $ROOT, $CONF_DIR/{slurm,gres,slurmdbd}.conf and database $DB_NAME"
    rm -rf "$ROOT"
    rm -f "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf" "$CONF_DIR/slurmdbd.conf"
    if mysqladmin -uroot --connect-timeout=2 ping >/dev/null 2>&1; then
        mysql -uroot -e "DROP DATABASE IF EXISTS $DB_NAME;
            DROP USER IF EXISTS '$DB_USER'@'localhost'; DROP USER IF EXISTS '$DB_USER'@'127.0.0.1';"
    else
        say "MariaDB not running: database $DB_NAME not dropped"
    fi
fi
say "stopped"
