#!/usr/bin/env bash
# Bring up (or repair) the single-node GPU Commons Slurm cluster. Idempotent.
#
#   deploy/slurm/up.sh                      # everything; fast no-op if already up
#   deploy/slurm/up.sh --user alice [--user bob ...]
#                                           # also create/register cluster users
#   deploy/slurm/up.sh --version 24.11 [--user ...]
#                                           # a second cluster on Slurm 24.11 (built
#                                           # once from source), beside the default
#
# Writes the portal env file to $GPUC_SLURM_ROOT/env (default
# /var/lib/gpucommons-slurm/env; /var/lib/gpucommons-slurm-24.11/env for 24.11).
# See README.md in this directory.
set -euo pipefail

say() { echo "[up.sh] $*" >&2; }
die() { echo "[up.sh] ERROR: $*" >&2; exit 1; }

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

VERSION=22.05
EXTRA_USERS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --user) [ $# -ge 2 ] || die "--user needs a name"; EXTRA_USERS+=("$2"); shift 2 ;;
        --user=*) EXTRA_USERS+=("${1#--user=}"); shift ;;
        --version) [ $# -ge 2 ] || die "--version needs a Slurm series"; VERSION=$2; shift 2 ;;
        --version=*) VERSION=${1#--version=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# What differs between the clusters. 22.05 is Debian 12's packaged Slurm (the default, as it
# always was); 24.11 is built from Debian 13's source into /opt/slurm-24.11 (build-slurm.sh)
# and runs beside it: its own ports, conf dir, state root, node name, cluster name and
# accounting database (and MariaDB user); the same munge.
case "$VERSION" in
    22.05)
        ROOT=${GPUC_SLURM_ROOT:-/var/lib/gpucommons-slurm}
        CONF_DIR=/etc/slurm
        SBIN=/usr/sbin
        BIN=/usr/bin
        CLUSTER=gpucommons
        NODE=$(hostname -s)
        CTLD_PORT=6917
        SLURMD_PORT=6918
        DBD_PORT=6919
        REST_PORT=6820
        DB_NAME=slurm_acct_db
        DB_USER=slurm
        REST_PLUGINS=openapi/v0.0.38,openapi/dbv0.0.38
        REST_API_VERSION=v0.0.38
        ;;
    24.11)
        ROOT=${GPUC_SLURM_2411_ROOT:-/var/lib/gpucommons-slurm-24.11}
        CONF_DIR=/etc/slurm-24.11
        SBIN=/opt/slurm-24.11/sbin
        BIN=/opt/slurm-24.11/bin
        CLUSTER=gpucommons2411
        NODE=gpuc2411
        CTLD_PORT=7017
        SLURMD_PORT=7018
        DBD_PORT=7019
        REST_PORT=7020
        DB_NAME=slurm_acct_db_2411
        DB_USER=slurm2411
        REST_PLUGINS=openapi/slurmctld,openapi/slurmdbd
        REST_API_VERSION=v0.0.42
        ;;
    *) die "unknown --version $VERSION (known: 22.05, 24.11)" ;;
esac
SLURM_CONF_FILE=$CONF_DIR/slurm.conf
ACCOUNT=gpucommons
PARTITION=gpu
GPU_TYPE=h100
GPU_COUNT=4
REST_USER=slurmrest
DEFAULT_USERS=(gpuc-demo gpuc-test1 gpuc-test2)
PACKAGES=(slurm-wlm slurmrestd slurmdbd munge mariadb-client)

LOG=$ROOT/log
RUN=$ROOT/run
SHARED=$ROOT/shared
JWT_KEY=$ROOT/jwt_hs256.key
ENV_FILE=$ROOT/env
HOST=$(hostname -s)
for u in "${EXTRA_USERS[@]}"; do
    [[ "$u" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid user name: $u"
done
[ "$(id -u)" = 0 ] || die "must run as root"

# The 24.11 build (minutes, once; afterwards a version check) runs before the lock below, so
# that parallel `up.sh --user X` calls for the 22.05 cluster never wait for it.
if [ "$VERSION" != 22.05 ]; then
    bash "$(dirname "$0")/build-slurm.sh" "$VERSION"
fi

# One up.sh at a time (tests may call `up.sh --user X` in parallel). fd 9 is
# closed for every daemon started below so they do not inherit the lock.
mkdir -p /run/lock
exec 9>/run/lock/gpucommons-slurm-up.lock
flock -w 300 9 || die "another up.sh is still running"

# ---------------------------------------------------------------- helpers
# running PID -> 0 if PID exists and is not a zombie (PID 1 here may reap late)
running() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# pid_alive PIDFILE COMM -> 0 if the pid in PIDFILE is a live process named COMM
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && running "$pid"
}

stop_pidfile() {  # PIDFILE COMM
    local pid
    pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(tr -dc '0-9' < "$1")
    say "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        running "$pid" || break
        sleep 0.1
    done
    running "$pid" && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

wait_for() {  # SECONDS DESCRIPTION LOGFILE CMD...  (CMD silences itself)
    local end=$((SECONDS + $1)) what=$2 logf=$3
    shift 3
    while [ "$SECONDS" -lt "$end" ]; do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    say "timed out waiting for $what"
    [ -n "$logf" ] && [ -f "$logf" ] && tail -n 30 "$logf" >&2
    die "$what did not come up"
}

# spawn CMD... : run CMD with no inherited file descriptors other than 0-2,
# which the caller redirects (daemons must not keep a caller's pipe open, or
# e.g. `out=$(up.sh)` in CI would wait for them; fd 9 holds our lock), from /:
# the caller's directory (a CI clone, deleted after its run) must not be a
# daemon's working directory (slurmrestd 22.05 dies at its next job submission
# when getcwd fails).
spawn() {
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        cd /
        exec "$@"
    )
}
spawn_bg() {  # like spawn, in the background, without a waiting parent shell
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        cd /
        exec "$@"
    ) &
}

# start_once NAME PIDFILE COMM CMD... : run CMD (which starts a daemon) unless
# the daemon is alive or was started by this script less than 20 s ago (it may
# not have written its pid file yet; slurmctld started twice kills the first).
declare -A STARTED_AT=()
start_once() {
    local name=$1 pidfile=$2 comm=$3 last
    shift 3
    pid_alive "$pidfile" "$comm" && return 0
    last=${STARTED_AT[$name]:-}
    if [ -n "$last" ] && [ $((SECONDS - last)) -lt 20 ]; then return 0; fi
    STARTED_AT[$name]=$SECONDS
    say "starting $name"
    "$@"
}

# install_if_changed SRC DEST MODE OWNER -> returns 0 if DEST was (re)written
install_if_changed() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        rm -f "$1"
        # still enforce ownership/mode
        chmod "$3" "$2"; chown "$4" "$2"
        return 1
    fi
    install -m "$3" -o "${4%%:*}" -g "${4##*:}" "$1" "$2"
    rm -f "$1"
    return 0
}

# ---------------------------------------------------------------- packages
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}"
fi

# ---------------------------------------------------------------- MariaDB
mysql_ok() { timeout 5 mysqladmin -uroot --connect-timeout=2 ping >/dev/null 2>&1; }
if ! mysql_ok; then
    say "starting MariaDB"
    install -d -o mysql -g mysql /run/mysqld
    spawn start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd \
        </dev/null >/dev/null 2>&1
    wait_for 60 "MariaDB" /var/log/mysql/error.log mysql_ok
fi

# ---------------------------------------------------------------- users / dirs
getent group "$REST_USER" >/dev/null || groupadd --system "$REST_USER"
getent passwd "$REST_USER" >/dev/null ||
    useradd --system -g "$REST_USER" -d /nonexistent -s /usr/sbin/nologin "$REST_USER"

install -d -m 0755 -o root -g root "$ROOT" "$CONF_DIR" "$SHARED" "$ROOT/spool" "$ROOT/spool/slurmd"
install -d -m 0755 -o slurm -g slurm "$LOG" "$RUN" "$ROOT/state" "$ROOT/state/slurmctld"
# Fake GPUs: clones of /dev/null (char 1,3) so the gres/gpu plugin sets
# CUDA_VISIBLE_DEVICES; ordinary files if mknod is not permitted (GPUs are
# then still scheduled and accounted, but CUDA_VISIBLE_DEVICES stays empty).
for i in $(seq 0 $((GPU_COUNT - 1))); do
    f=$ROOT/fakegpu$i
    [ -c "$f" ] && continue
    rm -f "$f"
    mknod -m 0666 "$f" c 1 3 2>/dev/null || { : > "$f"; chmod 0666 "$f"; }
done

# ---------------------------------------------------------------- munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating munge key"
    install -d -m 0700 -o munge -g munge /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key --force
    chown munge:munge /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -m 0755 -o munge -g munge /run/munge
install -d -m 0700 -o munge -g munge /var/lib/munge /var/log/munge
if ! pid_alive /run/munge/munged.pid munged; then
    say "starting munged"
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    spawn runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid \
        </dev/null >>"$LOG/daemon-start.log" 2>&1
    munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
    wait_for 20 "munged" /var/log/munge/munged.log munge_ok
fi

# ---------------------------------------------------------------- JWT key
if [ ! -s "$JWT_KEY" ]; then
    say "creating JWT key $JWT_KEY"
    umask 077
    dd if=/dev/urandom bs=32 count=1 status=none > "$JWT_KEY.tmp"
    mv "$JWT_KEY.tmp" "$JWT_KEY"
    umask 022
fi
chown slurm:slurm "$JWT_KEY"
chmod 0600 "$JWT_KEY"

# ---------------------------------------------------------------- DB account
DB_PASS_FILE=$ROOT/db_password
if [ ! -s "$DB_PASS_FILE" ]; then
    umask 077
    head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$DB_PASS_FILE"
    umask 022
fi
chmod 0600 "$DB_PASS_FILE"
DB_PASS=$(cat "$DB_PASS_FILE")
mysql -uroot <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
SQL

# ---------------------------------------------------------------- configs
CPUS=$(nproc --all)
# 22.05's node is the host itself; another cluster's node on the same host needs a NodeName
# of its own (slurmd -N) with the host as its NodeHostname.
if [ "$NODE" = "$HOST" ]; then
    NODE_DEF="$HOST NodeAddr=127.0.0.1"
else
    NODE_DEF="$NODE NodeHostname=$HOST NodeAddr=127.0.0.1"
fi
MEM_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
REAL_MEM=$(( MEM_MB > 4096 ? MEM_MB - 1024 : MEM_MB * 3 / 4 ))

tmp=$(mktemp)
cat > "$tmp" <<EOF
# Generated by deploy/slurm/up.sh -- do not edit by hand.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
MailProg=/bin/true
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
StateSaveLocation=$ROOT/state/slurmctld
SlurmdSpoolDir=$ROOT/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
MinJobAge=60
MaxJobCount=50000
JobRequeue=0
KillWait=2
OverTimeLimit=0
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# Limits pushed by the portal (GrpTRESMins=billing=N, GrpTRES=gres/gpu=N) are hard: "safe"
# starts a job only if it can run to its time limit within GrpTRESMins. Usage that
# GrpTRESMins compares against comes from the multifactor plugin and never decays or resets.
AccountingStorageEnforce=associations,limits,safe
PriorityType=priority/multifactor
PriorityDecayHalfLife=0
PriorityUsageResetPeriod=NONE
PriorityCalcPeriod=1
AccountingStorageTRES=gres/gpu,gres/gpu:$GPU_TYPE
AccountingStoreFlags=job_comment
NodeName=$NODE_DEF CPUs=$CPUS RealMemory=$REAL_MEM Gres=gpu:$GPU_TYPE:$GPU_COUNT State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=1-00:00:00 State=UP TRESBillingWeights=CPU=60,GRES/gpu=120
EOF
# Slurm 23.11 dropped switch/none (no SwitchType means none).
[ "$VERSION" = 22.05 ] || sed -i '/^SwitchType=/d' "$tmp"
ctl_changed=0
install_if_changed "$tmp" "$SLURM_CONF_FILE" 0644 root:root && ctl_changed=1

tmp=$(mktemp)
cat > "$tmp" <<EOF
# Generated by deploy/slurm/up.sh -- fake GPUs are ordinary files.
AutoDetect=off
NodeName=$NODE Name=gpu Type=$GPU_TYPE File=$ROOT/fakegpu[0-$((GPU_COUNT - 1))]
EOF
install_if_changed "$tmp" "$CONF_DIR/gres.conf" 0644 root:root && ctl_changed=1

tmp=$(mktemp)
cat > "$tmp" <<EOF
# Generated by deploy/slurm/up.sh -- do not edit by hand.
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
dbd_changed=0
install_if_changed "$tmp" "$CONF_DIR/slurmdbd.conf" 0600 slurm:slurm && dbd_changed=1

export SLURM_CONF=$SLURM_CONF_FILE

if [ $ctl_changed = 1 ]; then
    stop_pidfile "$RUN/slurmrestd.pid" slurmrestd
    stop_pidfile "$RUN/slurmd.pid" slurmd
    stop_pidfile "$RUN/slurmctld.pid" slurmctld
fi
[ $dbd_changed = 1 ] && stop_pidfile "$RUN/slurmdbd.pid" slurmdbd

# ---------------------------------------------------------------- slurmdbd
# Each start_* starts its daemon unless it is alive; the *_ok checks call it
# again, so a daemon that was still shutting down when first looked at (pid
# alive, then gone) is started on the next round instead of waited for forever.
# Daemons' own start-up messages (before they daemonise) go to daemon-start.log.
start_daemon() { spawn "$@" </dev/null >>"$LOG/daemon-start.log" 2>&1; }
start_dbd() { start_once slurmdbd "$RUN/slurmdbd.pid" slurmdbd start_daemon "$SBIN/slurmdbd"; }
dbd_ok() { start_dbd && timeout 10 "$BIN/sacctmgr" -nP show cluster format=cluster >/dev/null 2>&1; }
start_dbd
wait_for 60 "slurmdbd" "$LOG/slurmdbd.log" dbd_ok

# ---------------------------------------------------------------- accounting objects
ensure_cluster_and_account() {
    local clusters accounts
    clusters=$("$BIN/sacctmgr" -nP show cluster format=cluster)
    grep -qx "$CLUSTER" <<<"$clusters" || "$BIN/sacctmgr" -i add cluster "$CLUSTER" >/dev/null
    accounts=$("$BIN/sacctmgr" -nP show account format=account)
    grep -qx "$ACCOUNT" <<<"$accounts" ||
        "$BIN/sacctmgr" -i add account "$ACCOUNT" cluster="$CLUSTER" \
            description="GPU Commons portal users" organization=gpucommons >/dev/null
}
ensure_cluster_and_account

# ---------------------------------------------------------------- slurmctld / slurmd
start_ctld() { start_once slurmctld "$RUN/slurmctld.pid" slurmctld start_daemon "$SBIN/slurmctld"; }
if [ "$NODE" = "$HOST" ]; then
    start_slurmd() { start_once slurmd "$RUN/slurmd.pid" slurmd start_daemon "$SBIN/slurmd"; }
else
    start_slurmd() {
        start_once slurmd "$RUN/slurmd.pid" slurmd start_daemon "$SBIN/slurmd" -N "$NODE"
    }
fi
ctld_ok() { start_ctld && timeout 5 "$BIN/scontrol" ping 2>/dev/null | grep -q 'is UP'; }
node_ready() {
    local s
    start_ctld && start_slurmd || return 1
    s=$(timeout 5 "$BIN/sinfo" -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1)
    case "$s" in
        idle|mixed|allocated|completing) return 0 ;;
        down*|drain*|fail*)  # e.g. drained by down.sh, or down after a crash
            timeout 5 "$BIN/scontrol" update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            return 1 ;;
        *) return 1 ;;
    esac
}
start_ctld
wait_for 60 "slurmctld" "$LOG/slurmctld.log" ctld_ok
start_slurmd
node_ready || wait_for 60 "node $NODE to become idle" "$LOG/slurmd.log" node_ready

# ---------------------------------------------------------------- cluster users
ensure_user() {  # NAME
    local u=$1 uid
    if ! getent passwd "$u" >/dev/null; then
        say "creating Unix user $u"
        useradd -m -U -s /bin/bash -K UID_MIN=1000 "$u"
    fi
    uid=$(id -u "$u")
    [ "$uid" -ge 1000 ] && [ "$uid" -lt 60000 ] ||
        die "user $u has uid $uid (not in 1000..59999); refusing to use a system account"
    if [ ! -d "$SHARED/$u" ]; then
        install -d -m 0755 -o "$u" -g "$(id -gn "$u")" "$SHARED/$u"
    fi
}
ALL_USERS=("${DEFAULT_USERS[@]}" "${EXTRA_USERS[@]}")
assocs=$("$BIN/sacctmgr" -nP show assoc where account="$ACCOUNT" format=user)
for u in "${ALL_USERS[@]}"; do
    ensure_user "$u"
    if ! grep -qx "$u" <<<"$assocs"; then
        say "adding $u to account $ACCOUNT"
        "$BIN/sacctmgr" -i add user "$u" account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null
        assocs+=$'\n'"$u"
    fi
done

# ---------------------------------------------------------------- slurmrestd
rest_ok() {
    start_restd || return 1
    python3 - "$REST_PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:%s/openapi/v3" % sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP answer means it is listening
PY
}
launch_restd() {
    rm -f "$RUN/slurmrestd.pid"
    spawn_bg setsid bash -c '
        echo $$ > "$1"
        exec setpriv --reuid="$2" --regid="$2" --init-groups \
            env SLURM_CONF="$3" SLURM_JWT=daemon "$5" -s "$6" -a rest_auth/jwt "127.0.0.1:$4"
    ' up.sh "$RUN/slurmrestd.pid" "$REST_USER" "$SLURM_CONF_FILE" "$REST_PORT" \
        "$SBIN/slurmrestd" "$REST_PLUGINS" \
        </dev/null >>"$LOG/slurmrestd.log" 2>&1
}
start_restd() {
    start_once "slurmrestd on 127.0.0.1:$REST_PORT" "$RUN/slurmrestd.pid" slurmrestd launch_restd
}
# One started (before this script started daemons from /) in a directory since deleted
# answers every GET but dies at its next job submission: replace it.
if pid_alive "$RUN/slurmrestd.pid" slurmrestd &&
    [[ "$(readlink "/proc/$(tr -dc '0-9' < "$RUN/slurmrestd.pid")/cwd")" == *" (deleted)" ]]; then
    say "slurmrestd runs in a deleted directory: restarting it"
    stop_pidfile "$RUN/slurmrestd.pid" slurmrestd
fi
if ! pid_alive "$RUN/slurmrestd.pid" slurmrestd; then
    start_restd
    wait_for 30 "slurmrestd" "$LOG/slurmrestd.log" rest_ok
fi

# ---------------------------------------------------------------- provisioning helper
# The one privileged command the portal's `unix` provisioner runs (with an argument list,
# via sudo or as root): creates and removes cluster users it marks as its own.
tmp=$(mktemp)
cp "$(dirname "$0")/provision-user" "$tmp"
install_if_changed "$tmp" /usr/local/sbin/gpuc-provision-user 0755 root:root || true

# ---------------------------------------------------------------- env file
tmp=$(mktemp)
cat > "$tmp" <<EOF
# Written by deploy/slurm/up.sh; shell-sourceable.
SLURM_REST_URL=http://127.0.0.1:$REST_PORT
SLURM_REST_API_VERSION=$REST_API_VERSION
SLURM_JWT_KEY_FILE=$JWT_KEY
SLURM_SHARED_ROOT=$SHARED
SLURM_PARTITION=$PARTITION
SLURM_GPU_TYPES=$GPU_TYPE
SLURM_ACCOUNT=$ACCOUNT
SLURM_CLUSTER_NAME=$CLUSTER
SLURM_DEMO_USER=gpuc-demo
SLURM_CONF=$SLURM_CONF_FILE
SLURM_BIN=$BIN
EOF
install_if_changed "$tmp" "$ENV_FILE" 0644 root:root || true

say "cluster up: $("$BIN/sinfo" -h -N -o '%N %T %G' | head -n1); env file $ENV_FILE"
