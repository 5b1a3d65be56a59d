#!/usr/bin/env bash
# Builds the C library (scripts/build-lib.sh: release, without the CLI and daemon features) and
# installs it for C callers under a prefix (default /usr/local):
#   PREFIX/lib/libsegstore.so.VERSION, with the links libsegstore.so.SONAME_VERSION (its
#     SONAME, which programs record) and libsegstore.so (what -lsegstore finds);
#   PREFIX/include/segstore.h;
#   PREFIX/lib/pkgconfig/segstore.pc.
# Then: cc prog.c $(pkg-config --cflags --libs segstore)   (PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
# when PREFIX is not one pkg-config searches; LD_LIBRARY_PATH=PREFIX/lib, or -Wl,-rpath, to
# run it when PREFIX/lib is not one the dynamic linker searches).
# usage: scripts/install-c.sh [--prefix DIR] [--libdir DIR]   (DESTDIR is honoured, for packagers)
# Idempotent: a second run replaces the same files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/usr/local
LIBDIR=
usage() { echo "usage: $0 [--prefix DIR] [--libdir DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || usage; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --libdir) [ $# -ge 2 ] || usage; LIBDIR=$2; shift 2 ;;
        --libdir=*) LIBDIR=${1#--libdir=}; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) usage ;;
    esac
done
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=$PREFIX/include
DEST=${DESTDIR:-}

LIB=$(bash "$ROOT/scripts/build-lib.sh")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
DESCRIPTION=$(sed -n 's/^description = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
SONAME=$(readelf -d "$LIB" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p' || true)
if [ -z "$SONAME" ]; then
    # No readelf: the name build-lib.sh gives (libsegstore.so.MAJOR, or .0.MINOR for 0.x).
    MAJOR=${VERSION%%.*}; MINOR=${VERSION#*.}; MINOR=${MINOR%%.*}
    if [ "$MAJOR" = 0 ]; then SONAME=libsegstore.so.0.$MINOR; else SONAME=libsegstore.so.$MAJOR; fi
fi

install -d "$DEST$LIBDIR" "$DEST$LIBDIR/pkgconfig" "$DEST$INCLUDEDIR"
install -m 0755 "$LIB" "$DEST$LIBDIR/libsegstore.so.$VERSION"
[ "$SONAME" = "libsegstore.so.$VERSION" ] || ln -sfn "libsegstore.so.$VERSION" "$DEST$LIBDIR/$SONAME"
ln -sfn "$SONAME" "$DEST$LIBDIR/libsegstore.so"
install -m 0644 "$ROOT/include/segstore.h" "$DEST$INCLUDEDIR/segstore.h"
PC_LIBDIR=$LIBDIR
[ "$LIBDIR" != "$PREFIX/lib" ] || PC_LIBDIR='${prefix}/lib'
cat >"$DEST$LIBDIR/pkgconfig/segstore.pc.tmp" <<PC
prefix=$PREFIX
libdir=$PC_LIBDIR
includedir=\${prefix}/include

Name: segstore
Description: $DESCRIPTION (C ABI: include/segstore.h)
Version: $VERSION
Libs: -L\${libdir} -lsegstore
Cflags: -I\${includedir}
PC
mv "$DEST$LIBDIR/pkgconfig/segstore.pc.tmp" "$DEST$LIBDIR/pkgconfig/segstore.pc"

echo "installed $DEST$LIBDIR/libsegstore.so.$VERSION ($SONAME), $DEST$INCLUDEDIR/segstore.h, $DEST$LIBDIR/pkgconfig/segstore.pc"
# Refresh the dynamic linker's cache when installing into the system's own directories.
if [ -z "$DEST" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then
    case "$LIBDIR" in /usr/lib|/usr/local/lib|/usr/lib64|/usr/local/lib64) ldconfig ;; esac
fi
