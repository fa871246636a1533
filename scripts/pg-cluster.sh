#!/usr/bin/env bash
# Start/stop a private, throw-away PostgreSQL 15 cluster for tests.
#
#   scripts/pg-cluster.sh start DATADIR PORT [--timescaledb PREFIX]
#       initdb (if needed) and start; prints the connection URL on stdout:
#       postgresql://postgres@127.0.0.1:PORT/postgres
#       PREFIX comes from scripts/build-timescaledb.sh; its private copy of
#       PostgreSQL is used, since only it can load the timescaledb extension.
#   scripts/pg-cluster.sh stop DATADIR
#
# As root, the server runs as `postgres` (initdb refuses to run as root).
set -euo pipefail

PG_MAJOR=15
SYS_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin

# Logs go to stderr; stdout carries only the URL.
log() { printf 'pg-cluster: %s\n' "$*" >&2; }
die() { printf 'pg-cluster: ERROR: %s\n' "$*" >&2; exit 1; }
usage() {
  die "usage: $0 start DATADIR PORT [--timescaledb PREFIX] | $0 stop DATADIR"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a PostgreSQL tool as the cluster owner.
as_owner() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd_start() {
  [ $# -ge 2 ] || usage
  local datadir=$1 port=$2 prefix="" bindir=$SYS_BINDIR
  shift 2
  while [ $# -gt 0 ]; do
    case $1 in
      --timescaledb) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  case $port in ''|*[!0-9]*) die "PORT must be a number: $port" ;; esac

  if [ -n "$prefix" ]; then
    prefix=$(cd "$prefix" && pwd)
    bindir=$prefix/lib/postgresql/$PG_MAJOR/bin
    [ -f "$prefix/share/postgresql/$PG_MAJOR/extension/timescaledb.control" ] \
      || die "no timescaledb in $prefix (run scripts/build-timescaledb.sh)"
  fi
  [ -x "$bindir/postgres" ] || die "no PostgreSQL binaries in $bindir"

  mkdir -p "$datadir"
  datadir=$(cd "$datadir" && pwd)
  # Unix socket paths are limited to ~107 bytes.
  [ ${#datadir} -le 90 ] || die "DATADIR path too long for a unix socket: $datadir"
  if is_root; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
    chown postgres:postgres "$datadir"
    runuser -u postgres -- test -x "$datadir" \
      || die "user postgres cannot reach $datadir (a parent directory is not traversable)"
  fi
  chmod 700 "$datadir"

  if [ ! -f "$datadir/PG_VERSION" ]; then
    log "initdb $datadir"
    as_owner "$bindir/initdb" -D "$datadir" -A trust -U postgres --no-sync \
      -E UTF8 --locale=C >&2
    # Our settings live in their own file, rewritten on every start.
    echo "include_if_exists = 'smartlocker.conf'" >>"$datadir/postgresql.conf"
  fi

  if as_owner "$bindir/pg_ctl" status -D "$datadir" >/dev/null 2>&1; then
    die "a server is already running on $datadir (stop it first)"
  fi

  {
    echo "# written by scripts/pg-cluster.sh"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$datadir'"
    if [ -n "$prefix" ]; then
      echo "shared_preload_libraries = 'timescaledb'"
      # The GUC only exists when telemetry was compiled in; an unknown
      # timescaledb.* setting would only produce a warning at startup.
      if grep -qa telemetry_level "$prefix/lib/postgresql/$PG_MAJOR/lib/"timescaledb-*.so; then
        echo "timescaledb.telemetry_level = off"
      else
        echo "# timescaledb built without telemetry (USE_TELEMETRY=OFF)"
      fi
    fi
  } >"$datadir/smartlocker.conf"
  if is_root; then chown postgres:postgres "$datadir/smartlocker.conf"; fi
  # Remember which binaries run this cluster, for `stop`.
  echo "$bindir" >"$datadir/.smartlocker-bindir"

  log "starting on 127.0.0.1:$port with $bindir"
  as_owner "$bindir/pg_ctl" start -D "$datadir" -l "$datadir/server.log" -w -t 60 >&2 \
    || { tail -n 20 "$datadir/server.log" >&2 || true; die "server failed to start"; }

  for _ in $(seq 1 60); do
    if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
      echo "postgresql://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    sleep 0.5
  done
  die "server not ready on port $port (see $datadir/server.log)"
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  local datadir=$1 bindir=$SYS_BINDIR
  [ -f "$datadir/PG_VERSION" ] || die "not a PostgreSQL data directory: $datadir"
  if [ -f "$datadir/.smartlocker-bindir" ]; then
    bindir=$(cat "$datadir/.smartlocker-bindir")
  fi
  as_owner "$bindir/pg_ctl" stop -D "$datadir" -m fast -w >&2
}

[ $# -ge 1 ] || usage
action=$1
shift
case $action in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  *) usage ;;
esac
