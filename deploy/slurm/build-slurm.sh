#!/usr/bin/env bash
# Build Slurm from Debian's source tarball into /opt/slurm-<SERIES>, once.
#
#   deploy/slurm/build-slurm.sh 24.11      # no-op when already built
#
# Debian 12 (bookworm) packages Slurm 22.05 only. Debian 13 (trixie) packages
# 24.11; its orig tarball is fetched through apt from a trixie *deb-src* line
# (never a binary `deb` line, nothing pinned: the machine's own packages stay
# bookworm's) and built against bookworm's libraries. A finished build is
# recognised by `slurmctld -V`, so a second run costs milliseconds. up.sh calls
# this for `--version`; it can also run by itself (e.g. to warm a CI cache).
set -euo pipefail

SERIES=${1:?usage: build-slurm.sh SERIES (e.g. 24.11)}
case "$SERIES" in
    24.11) SUITE=trixie ;;
    *) echo "[build-slurm] ERROR: no source for Slurm $SERIES (known: 24.11)" >&2; exit 2 ;;
esac
PREFIX=/opt/slurm-$SERIES
SYSCONF=/etc/slurm-$SERIES
WORK=/var/cache/gpucommons-slurm-build/$SERIES
SOURCES_FILE=/etc/apt/sources.list.d/gpucommons-$SUITE-src.sources
BUILD_DEPS=(build-essential pkg-config libjwt-dev libhttp-parser-dev libjson-c-dev libyaml-dev
    libmunge-dev libmariadb-dev xz-utils)

say() { echo "[build-slurm] $*" >&2; }
die() { echo "[build-slurm] ERROR: $*" >&2; exit 1; }

built() {
    [ -x "$PREFIX/sbin/slurmctld" ] && [ -x "$PREFIX/sbin/slurmdbd" ] &&
        [ -x "$PREFIX/sbin/slurmrestd" ] &&
        [[ "$("$PREFIX/sbin/slurmctld" -V 2>/dev/null)" == "slurm $SERIES."* ]] &&
        compgen -G "$PREFIX/lib/slurm/data_parser_v0_0_4*.so" >/dev/null
}
if built; then
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root"

mkdir -p /run/lock
exec 8>/run/lock/gpucommons-slurm-build-$SERIES.lock
flock -w 3600 8 || die "another build of $SERIES is still running"
built && exit 0

# ---------------------------------------------------------------- apt: source only
if [ ! -f "$SOURCES_FILE" ]; then
    say "adding a deb-src line for Debian $SUITE ($SOURCES_FILE)"
    cat > "$SOURCES_FILE" <<EOF
# Added by deploy/slurm/build-slurm.sh: source packages only (Slurm $SERIES is
# built from Debian $SUITE's tarball). No binary 'deb' line, nothing pinned.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
missing=()
for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
mkdir -p "$WORK"
cd "$WORK"
tarball=$(ls slurm-wlm_"$SERIES".*.orig.tar.* 2>/dev/null | head -n1 || true)
if [ ${#missing[@]} -gt 0 ] || [ -z "$tarball" ]; then
    apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing build dependencies: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${BUILD_DEPS[@]}"
fi
if [ -z "$tarball" ]; then
    # --tar-only: the .dsc of a security revision may be missing from the mirror.
    say "downloading Slurm $SERIES source tarball"
    apt-get source --download-only --tar-only "slurm-wlm/$SUITE"
    tarball=$(ls slurm-wlm_"$SERIES".*.orig.tar.* 2>/dev/null | head -n1 || true)
    [ -n "$tarball" ] || die "apt-get source gave no slurm-wlm $SERIES tarball"
fi

# ---------------------------------------------------------------- build
rm -rf src
mkdir src
tar -xf "$tarball" -C src --strip-components=1
cd src
say "configuring $tarball (log: $WORK/build.log)"
{
    ./configure --prefix="$PREFIX" --sysconfdir="$SYSCONF" \
        --with-jwt --with-http-parser --with-json --with-yaml \
        --without-rpath --disable-debug
    nice make -j"$(nproc)"
    make install
} > "$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; die "build failed"; }
cd "$WORK"
rm -rf src
built || die "built, but not Slurm $SERIES with data parsers (missing libjson-c-dev?)"
say "built $("$PREFIX/sbin/slurmctld" -V) into $PREFIX"
