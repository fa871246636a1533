#!/usr/bin/env bash
# Build TimescaleDB (Apache-only edition) from Debian trixie's `timescaledb`
# source package against the installed PostgreSQL 15, into a private, cached,
# relocatable prefix that also holds a copy of the PostgreSQL 15 installation
# (PostgreSQL only loads extensions from its own SHAREDIR/PKGLIBDIR).
#
# Usage: prefix=$(scripts/build-timescaledb.sh)
#   stdout: only the prefix path (last line); all logs go to stderr.
# Env:
#   SMARTLOCKER_CACHE_DIR  cache root (default: /var/cache/smartlocker as root,
#                          else ${XDG_CACHE_HOME:-$HOME/.cache}/smartlocker)
set -euo pipefail

PG_MAJOR=15
SRC_SUITE=trixie
SRC_PKG=timescaledb
MARKER=.smartlocker-complete

# Keep stdout clean for the caller: fd 3 is the real stdout, everything else
# (including output of the tools we run) goes to stderr.
exec 3>&1 1>&2

log() { printf 'build-timescaledb: %s\n' "$*" >&2; }
die() { printf 'build-timescaledb: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly, or via sudo when available.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

if [ -n "${SMARTLOCKER_CACHE_DIR:-}" ]; then
  CACHE=$SMARTLOCKER_CACHE_DIR
elif [ "$(id -u)" -eq 0 ]; then
  CACHE=/var/cache/smartlocker
else
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/smartlocker
fi
mkdir -p "$CACHE"
# The postgres user must be able to traverse into the prefix.
chmod 755 "$CACHE"

# Serialise concurrent runs on the same cache.
exec 9>"$CACHE/.build-timescaledb.lock"
flock 9

SYS_PGLIB=/usr/lib/postgresql/$PG_MAJOR
SYS_PGSHARE=/usr/share/postgresql/$PG_MAJOR
SYS_PGINC=/usr/include/postgresql

server_version() {
  # "postgres (PostgreSQL) 15.20 (Debian ...)" -> 15.20
  "$SYS_PGLIB/bin/postgres" --version | awk '{print $3}'
}

# Fast path: a finished prefix for this server version is already cached.
# (Runs before any apt/network work so a cached run is instant.)
if [ -x "$SYS_PGLIB/bin/postgres" ]; then
  pgver=$(server_version)
  # Several cached TimescaleDB versions: take the highest.
  cached=$(for d in "$CACHE/pg$pgver-timescaledb-"*/; do
             if [ -f "$d$MARKER" ]; then printf '%s\n' "${d%/}"; fi
           done | sort -V | tail -n 1)
  if [ -n "$cached" ]; then
    log "cached: $cached"
    echo "$cached" >&3
    exit 0
  fi
fi

# ---------------------------------------------------------------------------
# Build dependencies.
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get -qq update
    apt_updated=1
  fi
}
# Install packages (pkg or pkg=version), running `apt-get update` first only
# if apt does not know a candidate for one of them yet.
apt_install() {
  local p name policy
  for p in "$@"; do
    name=${p%%=*}
    # (Capture first: grep -q closing the pipe early would trip pipefail.)
    policy=$(apt-cache policy "$name" 2>/dev/null || true)
    if ! grep -q 'Candidate: [^(]' <<<"$policy"; then
      apt_update_once
      break
    fi
  done
  if ! as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "$@"; then
    # The package lists may just be stale (e.g. security update of the server).
    [ "$apt_updated" -eq 0 ] || return 1
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "$@"
  fi
}

if [ ! -x "$SYS_PGLIB/bin/postgres" ]; then
  log "installing postgresql-$PG_MAJOR"
  apt_install "postgresql-$PG_MAJOR"
fi
srv_deb=$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR")

missing=()
for p in cmake gcc make dpkg-dev libssl-dev ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
    || missing+=("$p")
done
dev_deb=$(dpkg-query -W -f='${Status} ${Version}' "postgresql-server-dev-$PG_MAJOR" \
  2>/dev/null | awk '/ok installed/ {print $4}' || true)
if [ "$dev_deb" != "$srv_deb" ]; then
  # Pin the headers to exactly the server's Debian version.
  missing+=("postgresql-server-dev-$PG_MAJOR=$srv_deb")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing build deps: ${missing[*]}"
  apt_install "${missing[@]}" \
    || die "could not install ${missing[*]} (is postgresql-server-dev-$PG_MAJOR=$srv_deb still in the archive?)"
fi

# Headers and server binaries must be the same minor version: an extension
# built against other headers may not load or may misbehave.
dev_deb=$(dpkg-query -W -f='${Version}' "postgresql-server-dev-$PG_MAJOR")
[ "$dev_deb" = "$srv_deb" ] \
  || die "version mismatch: postgresql-$PG_MAJOR $srv_deb vs postgresql-server-dev-$PG_MAJOR $dev_deb"
pgver=$(server_version)
cfgver=$("$SYS_PGLIB/bin/pg_config" --version | awk '{print $2}')
[ "$cfgver" = "$pgver" ] \
  || die "version mismatch: postgres --version $pgver vs pg_config --version $cfgver"
log "PostgreSQL server $pgver, server-dev $dev_deb"

# ---------------------------------------------------------------------------
# Fetch the trixie source package with a private apt configuration, so the
# system's apt sources stay untouched.

# The main Debian archive URI, taken from the machine's own apt sources
# (deb822 .sources first, then one-line sources.list); skip -security.
debian_archive_uri() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )[a-z]+( |$)/)
          for (i = 1; i <= n; i++) print u[i]
        types = ""; suites = ""; n = 0
      }
      /^[ \t]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "types:" { $1 = ""; types = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "uris:" { for (i = 2; i <= NF; i++) u[++n] = $i }
      END { flush() }
    ' "$f"
  done
  if [ -f /etc/apt/sources.list ]; then
    # deb [options] URI suite components...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' /etc/apt/sources.list \
      | awk '$1 == "deb" && $3 !~ /-/ {print $2}'
  fi
}
archive_uri=$(debian_archive_uri | grep -v -- '-security' | grep -E '/debian/?$' \
  | head -n 1 || true)
[ -n "$archive_uri" ] || archive_uri=$(debian_archive_uri | grep -v -- '-security' | head -n 1 || true)
[ -n "$archive_uri" ] || die "no Debian archive URI found in /etc/apt/sources.list{,.d}"
archive_uri=${archive_uri%/}
# (Not logged: only its origin, the machine's own apt sources, matters.)
log "Debian archive URI taken from the machine's apt sources"

# Trixie's Release file is signed with trixie archive keys; bookworm's
# debian-archive-keyring ships them, and apt refuses an unverifiable Release.
# (No gpg needed here: apt verifies with gpgv, present on every Debian.)
keyring=""
for k in /usr/share/keyrings/debian-archive-keyring.gpg \
         /usr/share/keyrings/debian-archive-$SRC_SUITE-automatic.gpg; do
  if [ -f "$k" ]; then keyring=$k; break; fi
done
[ -n "$keyring" ] || die "no Debian archive keyring in /usr/share/keyrings (install debian-archive-keyring)"
log "verifying $SRC_SUITE with $keyring"

SRCDIR=$CACHE/src
mkdir -p "$SRCDIR"
tmp=$(mktemp -d "$CACHE/.apt-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/parts" "$tmp/dl"
printf 'deb-src [signed-by=%s] %s %s main\n' "$keyring" "$archive_uri" "$SRC_SUITE" \
  >"$tmp/sources.list"
# apt drops privileges to _apt for downloads; let it write there.
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
  chown _apt "$tmp/dl"
fi
apt_priv=(
  -o "Dir::Etc::SourceList=$tmp/sources.list"
  -o "Dir::Etc::SourceParts=$tmp/parts"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "Acquire::Languages=none"
)
log "apt-get update ($SRC_SUITE deb-src, private config)"
apt-get -qq "${apt_priv[@]}" update
(cd "$tmp/dl" && apt-get -qq "${apt_priv[@]}" source --download-only "$SRC_PKG")

dsc=$(find "$tmp/dl" -maxdepth 1 -name "${SRC_PKG}_*.dsc" | head -n 1)
[ -n "$dsc" ] || die "apt-get source did not produce a .dsc"
deb_version=$(awk '/^Version:/ {print $2; exit}' "$dsc")
ts_version=${deb_version#*:}
ts_version=${ts_version%-*}
ts_version=${ts_version%%+*}
log "$SRC_PKG $deb_version (upstream $ts_version)"
# Keep the downloaded source files in the cache.
cp -f "$tmp/dl/"* "$SRCDIR/"
dsc=$SRCDIR/$(basename "$dsc")

SRC=$SRCDIR/$SRC_PKG-$deb_version
if [ ! -f "$SRC/.extracted" ]; then
  rm -rf "$SRC"
  # dpkg-source checks the tarballs against the .dsc checksums (the .dsc
  # itself was verified by apt through the signed Release/Sources chain).
  dpkg-source -x "$dsc" "$SRC"
  touch "$SRC/.extracted"
fi

# ---------------------------------------------------------------------------
# Private prefix: a relocatable copy of PostgreSQL $PG_MAJOR in Debian's
# relative layout. The binaries derive share/lib/include dirs from their own
# location relative to /usr, so the copies point inside the prefix.
PREFIX=$CACHE/pg$pgver-timescaledb-$ts_version
rm -rf "$PREFIX"   # an unfinished earlier attempt (no marker)
mkdir -p "$PREFIX/lib/postgresql" "$PREFIX/share/postgresql" "$PREFIX/include/postgresql/$PG_MAJOR"
cp -a "$SYS_PGLIB" "$PREFIX/lib/postgresql/"
cp -a "$SYS_PGSHARE" "$PREFIX/share/postgresql/"
cp -a "$SYS_PGINC/$PG_MAJOR/server" "$PREFIX/include/postgresql/$PG_MAJOR/"
# Client-side headers (libpq, pg_config*.h) live directly under include/postgresql.
find "$SYS_PGINC" -maxdepth 1 -mindepth 1 ! -regex '.*/[0-9]+' -exec cp -a {} "$PREFIX/include/postgresql/" \;

PG_CONFIG=$PREFIX/lib/postgresql/$PG_MAJOR/bin/pg_config
for opt in --sharedir --pkglibdir --includedir-server; do
  d=$("$PG_CONFIG" "$opt")
  case $d in
    "$PREFIX"/*) log "pg_config $opt = $d" ;;
    *) die "copied pg_config $opt points outside the prefix: $d" ;;
  esac
done

# ---------------------------------------------------------------------------
# Build TimescaleDB, Apache-licensed code only, no telemetry, no tests.
BUILD=$tmp/build
log "configuring $SRC_PKG $ts_version"
cmake -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPG_CONFIG="$PG_CONFIG" \
  -DAPACHE_ONLY=ON \
  -DREGRESS_CHECKS=OFF \
  -DTAP_CHECKS=OFF \
  -DWARNINGS_AS_ERRORS=OFF \
  -DUSE_TELEMETRY=OFF \
  -DSEND_TELEMETRY_DEFAULT=OFF \
  -DENABLE_DEBUG_UTILS=OFF \
  -DLINTER=OFF
make -C "$BUILD" -j"$(nproc)"
make -C "$BUILD" install

ls "$PREFIX/share/postgresql/$PG_MAJOR/extension/timescaledb.control" >/dev/null \
  || die "timescaledb.control not installed into the prefix"

# The server may run as `postgres` (initdb refuses root): make it readable.
chmod -R a+rX "$PREFIX"
date -u +%FT%TZ >"$PREFIX/$MARKER"   # written last: marks the prefix complete
log "built $PREFIX"
echo "$PREFIX" >&3
