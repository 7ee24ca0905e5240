#!/usr/bin/env bash
# Bring up (or repair) the single-node GPU Commons Slurm cluster. Idempotent.
#
#   deploy/slurm/up.sh                      # everything; fast no-op if already up
#   deploy/slurm/up.sh --user alice [--user bob ...]
#                                           # also create/register cluster users
#
# Writes the portal env file to $GPUC_SLURM_ROOT/env (default
# /var/lib/gpucommons-slurm/env). See README.md in this directory.
set -euo pipefail

ROOT=${GPUC_SLURM_ROOT:-/var/lib/gpucommons-slurm}
CONF_DIR=/etc/slurm
SLURM_CONF_FILE=$CONF_DIR/slurm.conf
CLUSTER=gpucommons
ACCOUNT=gpucommons
PARTITION=gpu
GPU_TYPE=h100
GPU_COUNT=4
CTLD_PORT=6917
SLURMD_PORT=6918
DBD_PORT=6919
REST_PORT=6820
REST_USER=slurmrest
DEFAULT_USERS=(gpuc-demo gpuc-test1 gpuc-test2)
PACKAGES=(slurm-wlm slurmrestd slurmdbd munge mariadb-client)

LOG=$ROOT/log
RUN=$ROOT/run
SHARED=$ROOT/shared
JWT_KEY=$ROOT/jwt_hs256.key
ENV_FILE=$ROOT/env
HOST=$(hostname -s)

say() { echo "[up.sh] $*" >&2; }
die() { echo "[up.sh] ERROR: $*" >&2; exit 1; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

EXTRA_USERS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --user) [ $# -ge 2 ] || die "--user needs a name"; EXTRA_USERS+=("$2"); shift 2 ;;
        --user=*) EXTRA_USERS+=("${1#--user=}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
for u in "${EXTRA_USERS[@]}"; do
    [[ "$u" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid user name: $u"
done
[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- helpers
# pid_alive PIDFILE COMM -> 0 if the pid in PIDFILE is a live process named COMM
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' < "$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_pidfile() {  # PIDFILE COMM
    local pid i
    pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(tr -dc '0-9' < "$1")
    say "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

wait_for() {  # SECONDS DESCRIPTION LOGFILE CMD...
    local secs=$1 what=$2 logf=$3 i
    shift 3
    for i in $(seq 1 $((secs * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    say "timed out waiting for $what"
    [ -n "$logf" ] && [ -f "$logf" ] && tail -n 30 "$logf" >&2
    die "$what did not come up"
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
mysql_ok() { mysqladmin -uroot --connect-timeout=2 ping >/dev/null 2>&1; }
if ! mysql_ok; then
    say "starting MariaDB"
    install -d -o mysql -g mysql /run/mysqld
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_for 60 "MariaDB" /var/log/mysql/error.log mysql_ok
fi

# ---------------------------------------------------------------- users / dirs
getent group "$REST_USER" >/dev/null || groupadd --system "$REST_USER"
getent passwd "$REST_USER" >/dev/null ||
    useradd --system -g "$REST_USER" -d /nonexistent -s /usr/sbin/nologin "$REST_USER"

install -d -m 0755 -o root -g root "$ROOT" "$CONF_DIR" "$SHARED" "$ROOT/spool" "$ROOT/spool/slurmd"
install -d -m 0755 -o slurm -g slurm "$LOG" "$RUN" "$ROOT/state" "$ROOT/state/slurmctld"
for i in $(seq 0 $((GPU_COUNT - 1))); do
    [ -e "$ROOT/fakegpu$i" ] || { : > "$ROOT/fakegpu$i"; chmod 0666 "$ROOT/fakegpu$i"; }
done

# ---------------------------------------------------------------- munge
if [ ! -s /etc/munge/munge.key ]; then
    say "creating munge key"
    install -d -m 0700 -o munge -g munge /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -m 0755 -o munge -g munge /run/munge
install -d -m 0700 -o munge -g munge /var/lib/munge /var/log/munge
if ! pid_alive /run/munge/munged.pid munged; then
    say "starting munged"
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    munge_ok() { munge -n | unmunge; }
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
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# ---------------------------------------------------------------- configs
CPUS=$(nproc --all)
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
MinJobAge=30
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
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu,gres/gpu:$GPU_TYPE
AccountingStoreFlags=job_comment
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM Gres=gpu:$GPU_TYPE:$GPU_COUNT State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=1-00:00:00 State=UP
EOF
ctl_changed=0
install_if_changed "$tmp" "$SLURM_CONF_FILE" 0644 root:root && ctl_changed=1

tmp=$(mktemp)
cat > "$tmp" <<EOF
# Generated by deploy/slurm/up.sh -- fake GPUs are ordinary files.
AutoDetect=off
NodeName=$HOST Name=gpu Type=$GPU_TYPE File=$ROOT/fakegpu[0-$((GPU_COUNT - 1))]
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
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
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
dbd_ok() { sacctmgr -nP show cluster format=cluster; }
if ! pid_alive "$RUN/slurmdbd.pid" slurmdbd; then
    say "starting slurmdbd"
    /usr/sbin/slurmdbd
    wait_for 60 "slurmdbd" "$LOG/slurmdbd.log" dbd_ok
fi

# ---------------------------------------------------------------- accounting objects
ensure_cluster_and_account() {
    local clusters accounts
    clusters=$(sacctmgr -nP show cluster format=cluster)
    grep -qx "$CLUSTER" <<<"$clusters" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    accounts=$(sacctmgr -nP show account format=account)
    grep -qx "$ACCOUNT" <<<"$accounts" ||
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
            description="GPU Commons portal users" organization=gpucommons >/dev/null
}
ensure_cluster_and_account

# ---------------------------------------------------------------- slurmctld / slurmd
node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }
ctld_ok() { scontrol ping | grep -q 'is UP'; }
if ! pid_alive "$RUN/slurmctld.pid" slurmctld; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
    wait_for 60 "slurmctld" "$LOG/slurmctld.log" ctld_ok
fi
if ! pid_alive "$RUN/slurmd.pid" slurmd; then
    say "starting slurmd"
    /usr/sbin/slurmd
fi
node_ready() {
    local s
    s=$(node_state)
    case "$s" in
        idle|mixed|allocated|completing) return 0 ;;
        down*|drain*|fail*)
            scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
            return 1 ;;
        *) return 1 ;;
    esac
}
if ! node_ready; then
    wait_for 60 "node $HOST to become idle" "$LOG/slurmd.log" node_ready
fi

# ---------------------------------------------------------------- cluster users
ensure_user() {  # NAME
    local u=$1 uid
    if ! getent passwd "$u" >/dev/null; then
        say "creating Unix user $u"
        useradd -m -U -s /bin/bash -K UID_MIN=1000 "$u"
    fi
    uid=$(id -u "$u")
    [ "$uid" -ge 1000 ] || die "user $u has uid $uid < 1000; refusing to use a system account"
    if [ ! -d "$SHARED/$u" ]; then
        install -d -m 0755 -o "$u" -g "$(id -gn "$u")" "$SHARED/$u"
    fi
}
ALL_USERS=("${DEFAULT_USERS[@]}" "${EXTRA_USERS[@]}")
assocs=$(sacctmgr -nP show assoc where account="$ACCOUNT" format=user)
for u in "${ALL_USERS[@]}"; do
    ensure_user "$u"
    if ! grep -qx "$u" <<<"$assocs"; then
        say "adding $u to account $ACCOUNT"
        sacctmgr -i add user "$u" account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null
        assocs+=$'\n'"$u"
    fi
done

# ---------------------------------------------------------------- slurmrestd
rest_ok() {
    python3 - "$REST_PORT" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:%s/openapi/v3" % sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP answer means it is listening
PY
}
if ! pid_alive "$RUN/slurmrestd.pid" slurmrestd; then
    say "starting slurmrestd on 127.0.0.1:$REST_PORT"
    rm -f "$RUN/slurmrestd.pid"
    setsid bash -c '
        echo $$ > "$1"
        exec setpriv --reuid="$2" --regid="$2" --init-groups \
            env SLURM_CONF="$3" SLURM_JWT=daemon /usr/sbin/slurmrestd \
            -s openapi/v0.0.38,openapi/dbv0.0.38 -a rest_auth/jwt "127.0.0.1:$4"
    ' up.sh "$RUN/slurmrestd.pid" "$REST_USER" "$SLURM_CONF_FILE" "$REST_PORT" \
        </dev/null >>"$LOG/slurmrestd.log" 2>&1 &
    wait_for 30 "slurmrestd" "$LOG/slurmrestd.log" rest_ok
fi

# ---------------------------------------------------------------- env file
tmp=$(mktemp)
cat > "$tmp" <<EOF
# Written by deploy/slurm/up.sh; shell-sourceable.
SLURM_REST_URL=http://127.0.0.1:$REST_PORT
SLURM_REST_API_VERSION=v0.0.38
SLURM_JWT_KEY_FILE=$JWT_KEY
SLURM_SHARED_ROOT=$SHARED
SLURM_PARTITION=$PARTITION
SLURM_GPU_TYPES=$GPU_TYPE
SLURM_ACCOUNT=$ACCOUNT
SLURM_CLUSTER_NAME=$CLUSTER
SLURM_DEMO_USER=gpuc-demo
SLURM_CONF=$SLURM_CONF_FILE
EOF
install_if_changed "$tmp" "$ENV_FILE" 0644 root:root || true

say "cluster up: $(sinfo -h -N -o '%N %T %G' | head -n1); env file $ENV_FILE"
