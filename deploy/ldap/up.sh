#!/usr/bin/env bash
# Bring up (or repair) the GPU Commons test directory: an OpenLDAP slapd of its own (Debian's
# slapd package), listening on 127.0.0.1 only, suffix dc=gpucommons,dc=test. Idempotent.
#
#   deploy/ldap/up.sh        # install slapd/ldap-utils if missing, configure, start, seed
#
# Everything lives under $GPUC_LDAP_ROOT (default /var/lib/gpucommons-ldap): slapd.conf, the
# database, the admin password (admin.password, 0600) and the portal env file (env). The
# system slapd of the package (if any) is left alone.
set -euo pipefail

ROOT=${GPUC_LDAP_ROOT:-/var/lib/gpucommons-ldap}
PORT=${GPUC_LDAP_PORT:-8989}
SUFFIX=dc=gpucommons,dc=test
ADMIN_DN=cn=admin,$SUFFIX
PEOPLE_DN=ou=people,$SUFFIX
GROUPS_DN=ou=groups,$SUFFIX
GROUP_DN=cn=gpucommons,$GROUPS_DN
COUNTER_DN=cn=next-uid,$SUFFIX
GID_NUMBER=5000
UID_START=20000
CONF=$ROOT/slapd.conf
DATA=$ROOT/data
RUN=$ROOT/run
PASSWORD_FILE=$ROOT/admin.password
ENV_FILE=$ROOT/env
LOG=$ROOT/slapd.log
URL=ldap://127.0.0.1:$PORT

say() { echo "[ldap/up.sh] $*" >&2; }
die() { echo "[ldap/up.sh] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p /run/lock
exec 9>/run/lock/gpucommons-ldap-up.lock
flock -w 120 9 || die "another ldap/up.sh is still running"

if ! command -v slapd >/dev/null 2>&1 && [ ! -x /usr/sbin/slapd ] || ! command -v ldapsearch >/dev/null 2>&1; then
    say "installing slapd and ldap-utils"
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slapd ldap-utils >/dev/null
fi
SLAPD=/usr/sbin/slapd
getent passwd openldap >/dev/null || die "no openldap user (the slapd package makes it)"

install -d -m 0755 -o root -g root "$ROOT"
install -d -m 0700 -o openldap -g openldap "$DATA" "$RUN"

if [ ! -s "$PASSWORD_FILE" ]; then
    umask 077
    head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$PASSWORD_FILE"
    umask 022
fi
chmod 0600 "$PASSWORD_FILE"

write_conf() {
    local hash
    hash=$(slappasswd -T "$PASSWORD_FILE")
    cat <<CONF
# Written by deploy/ldap/up.sh
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $RUN/slapd.pid
argsfile $RUN/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel stats
database mdb
maxsize 104857600
suffix "$SUFFIX"
rootdn "$ADMIN_DN"
rootpw $hash
directory $DATA
index objectClass eq
index uid,memberUid eq
index uidNumber,gidNumber eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
CONF
}

pid_alive() {
    [ -s "$RUN/slapd.pid" ] && kill -0 "$(cat "$RUN/slapd.pid")" 2>/dev/null &&
        grep -q slapd "/proc/$(cat "$RUN/slapd.pid")/cmdline" 2>/dev/null
}
answers() {
    ldapsearch -x -LLL -H "$URL" -D "$ADMIN_DN" -y "$PASSWORD_FILE" -b "" -s base \
        namingContexts >/dev/null 2>&1
}

# The password is hashed with a fresh salt each time, so compare the config without rootpw.
tmp=$(mktemp)
write_conf > "$tmp"
if [ ! -f "$CONF" ] || ! diff -q <(grep -v "^rootpw" "$tmp") <(grep -v "^rootpw" "$CONF") >/dev/null; then
    install -m 0640 -o root -g openldap "$tmp" "$CONF"
    if pid_alive; then
        say "configuration changed: restarting slapd"
        kill "$(cat "$RUN/slapd.pid")"
        for _ in $(seq 50); do pid_alive || break; sleep 0.1; done
    fi
fi
rm -f "$tmp"

if pid_alive && ! answers; then
    say "slapd runs but does not answer with the admin password: restarting"
    kill "$(cat "$RUN/slapd.pid")"
    for _ in $(seq 50); do pid_alive || break; sleep 0.1; done
    install -m 0640 -o root -g openldap <(write_conf) "$CONF"
fi

if ! pid_alive; then
    say "starting slapd on $URL"
    # From /: the caller's directory (a CI clone, deleted after its run) is no daemon's.
    (cd / && "$SLAPD" -f "$CONF" -h "$URL" -u openldap -g openldap) >>"$LOG" 2>&1 9>&-
    for _ in $(seq 100); do answers && break; sleep 0.1; done
    answers || die "slapd did not answer on $URL (see $LOG)"
fi

# Seed the tree (each entry once).
ensure_entry() {  # DN, then the LDIF body on stdin
    local dn=$1 body
    body=$(cat)
    if ! ldapsearch -x -LLL -H "$URL" -D "$ADMIN_DN" -y "$PASSWORD_FILE" -b "$dn" -s base dn \
        >/dev/null 2>&1; then
        printf 'dn: %s\n%s\n' "$dn" "$body" |
            ldapadd -x -H "$URL" -D "$ADMIN_DN" -y "$PASSWORD_FILE" >/dev/null
        say "added $dn"
    fi
}
ensure_entry "$SUFFIX" <<LDIF
objectClass: dcObject
objectClass: organization
dc: gpucommons
o: GPU Commons test directory
LDIF
ensure_entry "$PEOPLE_DN" <<LDIF
objectClass: organizationalUnit
ou: people
LDIF
ensure_entry "$GROUPS_DN" <<LDIF
objectClass: organizationalUnit
ou: groups
LDIF
ensure_entry "$GROUP_DN" <<LDIF
objectClass: posixGroup
cn: gpucommons
gidNumber: $GID_NUMBER
description: Cluster users provisioned by GPU Commons
LDIF
# The uid counter: provisioners claim a number by replacing its value in one modify
# (delete the old value, add the next), which fails if another claimed it first.
ensure_entry "$COUNTER_DN" <<LDIF
objectClass: device
objectClass: extensibleObject
cn: next-uid
uidNumber: $UID_START
LDIF

tmp=$(mktemp)
cat > "$tmp" <<ENV
# Written by deploy/ldap/up.sh; shell-sourceable.
LDAP_URL=$URL
LDAP_BIND_DN=$ADMIN_DN
LDAP_PASSWORD_FILE=$PASSWORD_FILE
LDAP_SUFFIX=$SUFFIX
LDAP_PEOPLE_DN=$PEOPLE_DN
LDAP_GROUP_DN=$GROUP_DN
LDAP_COUNTER_DN=$COUNTER_DN
LDAP_GID_NUMBER=$GID_NUMBER
ENV
if ! cmp -s "$tmp" "$ENV_FILE"; then install -m 0644 "$tmp" "$ENV_FILE"; fi
rm -f "$tmp"
say "directory up on $URL (suffix $SUFFIX); env file $ENV_FILE"
