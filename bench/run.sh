#!/usr/bin/env bash
# Brewlytics benchmarks: the replicator against its peers, all measured in this one run on
# throwaway PostgreSQL clusters this script starts (initdb/pg_ctl; as root the servers run as
# the `postgres` user) and stops on exit, Ctrl-C or failure.
#
#   bench/run.sh            full sizes, medians of 3 runs (~30-40 min on 2 cores)
#   bench/run.sh --quick    small sizes, 1 run (smoke test, a few minutes)
#   bench/run.sh --runs 5 --only a,c
#
# a  apply throughput: a backlog written while the slot is idle, then caught up —
#    brewlytics replicate vs CREATE SUBSCRIPTION (plain tables, second cluster) vs
#    pg_recvlogical only decoding (the source's limit); then `replay --from-lsn 0/0` of the
#    same journal (replica and star rebuilt from it)
# b  freshness at a steady order rate through the API (brewlytics loadtest) vs the seed's
#    design (trigger into cdc_orders_seed + a poll every 5 s by id > last seen id)
# c  write cost: the order transaction (pgbench, 8 clients) on plain tables vs with the
#    seed's trigger vs with our slot consumed; WAL bytes per order; POST /orders throughput
#    (loadtest, closed loop, 8 users) vs pgbench
# d  initial copy of existing orders: rows/s into OLAP vs pg_dump | psql
# e  replicator peak RSS (VmHWM) during a's catch-up and during one large transaction; that
#    transaction's apply rate (replicator started after it); then, with the replicator
#    streaming, the time from the commit of another such transaction at the source to its
#    rows visible in OLAP
# f  clickstream end to end: `loadtest --mix browse` (impressions, clicks, orders in a
#    session) through POST /events, the OLTP table click_events and the replicator into
#    fact_impressions/fact_clicks: events/s loaded and freshness (API receive → OLAP load)
#
# Environment: BREWLYTICS_BIN (default target/release/brewlytics), PGBIN (directory of
# initdb/pg_ctl; default: found on PATH or /usr/lib/postgresql/*/bin), BENCH_PORT_BASE
# (fixed ports base..base+11; default: four free ports leased by bench/ports.sh, the way the
# tests take theirs), BENCH_KEEP=1 keeps the work directory,
# BENCH_RESULTS=FILE keeps the raw per-run figures (TSV: key, run, value),
# BENCH_REPLICATE_ARGS="--olap-commit sync" passes more flags to every `replicate`,
# BENCH_PROFILE=1 loads pg_stat_statements on the OLAP cluster and writes the replicator's
# costliest statements (BENCH_PROFILE_TOP, default 15) of a, replay, d and e to profile_*.txt
# in the work directory, kept with the logs. BENCH_PG_CONF="LINES" adds settings to every cluster's
# postgresql.conf (auto_explain, say: its plans land in each cluster's server.log).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
QUICK=0
RUNS=""
ONLY="a,b,c,d,e,f"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS:-1}
  A_ORDERS=20000; B_RATE=200; B_SECS=10; C_SECS=5; D_ORDERS=100000; E_ORDERS=25000
  F_RATE=50; F_SECS=10
else
  RUNS=${RUNS:-3}
  A_ORDERS=200000; B_RATE=500; B_SECS=60; C_SECS=30; D_ORDERS=1000000; E_ORDERS=125000
  F_RATE=200; F_SECS=60
fi
want() { [[ ",$ONLY," == *",$1,"* ]]; }

BIN=${BREWLYTICS_BIN:-$ROOT/target/release/brewlytics}
[ -x "$BIN" ] || { echo "no brewlytics binary at $BIN (cargo build --release, or set BREWLYTICS_BIN)" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if [ -z "${PGBIN:-}" ]; then
  if command -v initdb >/dev/null 2>&1; then
    PGBIN=$(dirname "$(readlink -f "$(command -v initdb)")")
  else
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  fi
fi
for tool in initdb pg_ctl psql pgbench pg_recvlogical pg_dump; do
  [ -x "$PGBIN/$tool" ] || { echo "missing $PGBIN/$tool (apt-get install postgresql postgresql-contrib)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 is needed for the statistics" >&2; exit 1; }

command -v flock >/dev/null || { echo "flock is needed for the ports (apt-get install util-linux)" >&2; exit 1; }
. "$HERE/ports.sh"
if [ -n "${BENCH_PORT_BASE:-}" ]; then
  SRC_PORT=$BENCH_PORT_BASE
  DST_PORT=$((BENCH_PORT_BASE + 1))
  API_PORT=$((BENCH_PORT_BASE + 10))
  REPL_PORT=$((BENCH_PORT_BASE + 11))
else
  lease_port SRC_PORT
  lease_port DST_PORT
  lease_port API_PORT
  lease_port REPL_PORT
fi
WORK=$(mktemp -d /tmp/brewlytics-bench.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv
: > "$RESULTS"
LOG=$WORK/bench.log
export PGUSER=bench PGHOST=127.0.0.1
unset PGPASSWORD PGDATABASE PGOPTIONS

# ---------------------------------------------------------------------------- processes
PIDS=()
CLUSTERS=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

stop_pid() { # SIGTERM, wait up to 20 s, then SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  local dir
  for dir in "${CLUSTERS[@]}"; do as_pg "$PGBIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK" >&2
  elif [ $rc -ne 0 ] || [ "${BENCH_PROFILE:-0}" = 1 ]; then
    # A failed or profiled run keeps its logs (the servers' among them) and profiles, not
    # its clusters (gigabytes after `e`).
    for dir in "${CLUSTERS[@]}"; do cp "$dir/server.log" "$WORK/$(basename "$dir")-server.log" 2>/dev/null || true; done
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name '*.log' ! -name 'profile_*.txt' -exec rm -rf {} +
    echo "logs and profiles kept in $WORK; remove it when done" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

bg() { # bg NAME CMD... : start in the background, remember the pid in BG_PID
  local name=$1; shift
  "$@" >>"$WORK/$name.log" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

forget() { # forget PID: stop it and drop it from PIDS
  local pid=$1 p keep=()
  stop_pid "$pid"
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; } # key run value

src() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -p "$SRC_PORT" -d "${DB:-coffee_oltp}" -At "$@"; }
dst() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -p "$DST_PORT" -d "${DB:-coffee_olap}" -At "$@"; }

cluster() { # cluster DIR PORT_VAR: started on the port in PORT_VAR (leased again if taken)
  local dir=$1 var=$2 attempt
  mkdir -p "$dir" "$WORK/sock"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir" "$WORK/sock"
  as_pg "$PGBIN/initdb" -D "$dir" -U bench -A trust --no-sync >/dev/null
  cat >> "$dir/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_connections = 200
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
logging_collector = off
EOF
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\ntrack_io_timing = on\n" >> "$dir/postgresql.conf"
  fi
  [ -z "${BENCH_PG_CONF:-}" ] || printf '%s\n' "$BENCH_PG_CONF" >> "$dir/postgresql.conf"
  for attempt in 1 2 3; do
    echo "port = ${!var}" >> "$dir/postgresql.conf" # the last one counts
    if as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      CLUSTERS+=("$dir")
      return 0
    fi
    # A leased port taken before the server bound it: another lease.
    grep -q "Address already in use" "$dir/server.log" && [ -z "${BENCH_PORT_BASE:-}" ] || break
    lease_port "$var"
  done
  echo "PostgreSQL did not start in $dir: $(grep -E 'FATAL|could not bind' "$dir/server.log" | tail -2)" >&2
  exit 1
}

wait_until() { # wait_until TIMEOUT_S CMD... : poll every 20 ms until CMD succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then return 1; fi
    sleep 0.02
  done
}

# --------------------------------------------------------------------------- fixtures
REPL_FLAGS=()
if "$BIN" replicate --help 2>/dev/null | grep -q -- '--replicator-listen'; then
  REPL_FLAGS+=(--replicator-listen "127.0.0.1:$REPL_PORT")
fi
if "$BIN" replicate --help 2>/dev/null | grep -q -- '--heartbeat-interval-ms'; then
  REPL_FLAGS+=(--heartbeat-interval-ms 0) # a heartbeat would write to the source mid-measure
fi

# BENCH_REPLICATE_ARGS: more flags for `replicate` (e.g. `--olap-commit sync`).
read -r -a EXTRA_FLAGS <<< "${BENCH_REPLICATE_ARGS:-}"
REPL_FLAGS+=("${EXTRA_FLAGS[@]}")

start_replicator() {
  bg replicator env OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" RUST_LOG="${BENCH_RUST_LOG:-warn}" \
    "$BIN" replicate "${REPL_FLAGS[@]}"
  REPL_PID=$BG_PID
}

# until_sql TIMEOUT_S DB CONDITION: one session on the destination cluster evaluates CONDITION
# every 20 ms until it holds, committing in between (each evaluation sees what committed since,
# and no lock is held); fails after TIMEOUT_S. Polling from here instead (a psql, a connection
# and a backend every 20 ms) took a quarter of one of the 2 cores during a catch-up (perf), from
# the processes being measured.
until_sql() {
  DB=$2 dst -c "set statement_timeout = '$1s'" \
    -c "do \$\$ begin while not ($3) loop commit; perform pg_sleep(0.02); end loop; end \$\$" >/dev/null 2>&1
}
checkpointed() { until_sql "$1" coffee_olap "exists (select from replication_checkpoint)"; }
marker_in_olap() { until_sql "$1" coffee_olap "exists (select from replica.stores where name = '$MARKER')"; }
marker_in_sub() { until_sql "$1" coffee_sub "exists (select from stores where name = '$MARKER')"; }

write_marker() { # a last small transaction; its arrival means everything before it arrived
  MARKER="bench-marker-$RANDOM-$RANDOM"
  src -c "insert into stores (name) values ('$MARKER')"
  END_LSN=$(src -c "select pg_current_wal_lsn()")
}

profile_reset() {
  [ "${BENCH_PROFILE:-0}" = 1 ] || return 0
  DB=coffee_olap dst -c "create extension if not exists pg_stat_statements; select pg_stat_statements_reset()" >/dev/null
}

profile_dump() { # profile_dump NAME: the top statements on OLAP since profile_reset
  [ "${BENCH_PROFILE:-0}" = 1 ] || return 0
  DB=coffee_olap dst -P pager=off -F ' | ' -c "select round(total_exec_time)::bigint as total_ms, calls, rows,
      round((total_exec_time / greatest(calls, 1))::numeric, 2) as mean_ms,
      left(regexp_replace(query, '\\s+', ' ', 'g'), 160) as query
    from pg_stat_statements order by total_exec_time desc limit ${BENCH_PROFILE_TOP:-15}" > "$WORK/profile_$1.txt"
  # What the statements the clients sent took in all, the journal's COPY (a connection of its
  # own) apart: set against the section's wall time, the rest is time between statements.
  DB=coffee_olap dst -c "select 'top-level statements: ' || round(sum(total_exec_time)) || ' ms, of which the journal COPY '
      || round(coalesce(sum(total_exec_time) filter (where query like 'copy cdc_events%'), 0)) || ' ms, in '
      || sum(calls) || ' calls' from pg_stat_statements where toplevel;
    select 'JIT (nested statements too): ' || round(sum(jit_generation_time + jit_inlining_time
      + jit_optimization_time + jit_emission_time)) || ' ms in ' || sum(jit_functions) || ' functions'
    from pg_stat_statements" >> "$WORK/profile_$1.txt"
}

peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Fresh databases: OLTP migrated and seeded with master data; OLAP migrated; no slots.
reset_databases() {
  local s
  DB=coffee_oltp src -c "select 1" >/dev/null 2>&1 && {
    DB=coffee_sub dst -c "alter subscription bench_sub disable" >/dev/null 2>&1 || true
    DB=coffee_sub dst -c "alter subscription bench_sub set (slot_name = none)" >/dev/null 2>&1 || true
    DB=coffee_sub dst -c "drop subscription if exists bench_sub" >/dev/null 2>&1 || true
  }
  for s in $(DB=postgres src -c "select slot_name from pg_replication_slots"); do
    DB=postgres src -c "select pg_drop_replication_slot('$s')" >/dev/null
  done
  for db in coffee_oltp; do DB=postgres src -c "drop database if exists $db with (force)"; DB=postgres src -c "create database $db"; done
  for db in coffee_olap coffee_sub coffee_copy seed_olap; do DB=postgres dst -c "drop database if exists $db with (force)"; DB=postgres dst -c "create database $db"; done
  OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" "$BIN" migrate >>"$WORK/setup.log" 2>&1
  OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" "$BIN" seed >>"$WORK/setup.log" 2>&1
  # The API refuses requests without a key: one for the load generator, with what it calls.
  BREWLYTICS_API_KEY=$(OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" "$BIN" api-key create \
    --name bench --scope orders:read,orders:write,catalog:read,events:write 2>>"$WORK/setup.log" | tail -1)
  export BREWLYTICS_API_KEY
  src -f "$HERE/source.sql" >/dev/null
  DB=coffee_oltp src -c "vacuum analyze" >/dev/null
  NCUST=$(src -c "select max(id) from customers")
  NEMP=$(src -c "select max(id) from employees")
  NPROD=$(src -c "select max(id) from products")
}

# The replicator's first start: slot and initial copy; then stopped.
first_start() {
  start_replicator
  checkpointed 300 || { echo "the replicator did not finish its first start" >&2; exit 1; }
  forget "$REPL_PID"
}

# Bytes of the journal (every partition of cdc_events, indexes included; a journal from
# before partitioning is one table).
journal_bytes() {
  dst -c "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c
          where c.oid = 'cdc_events'::regclass
             or c.oid in (select inhrelid from pg_inherits where inhparent = 'cdc_events'::regclass)"
}

pgbench_orders() { # pgbench_orders ARGS... (the order transaction, 8 clients)
  "$PGBIN/pgbench" -n -p "$SRC_PORT" -f "$HERE/order.pgbench" -c 8 -j 2 \
    -D ncust="$NCUST" -D nemp="$NEMP" -D nprod="$NPROD" "$@" coffee_oltp
}

# ------------------------------------------------------------------------------- a + e1
bench_a() {
  local run=$1 t0 t1 secs changes
  say "a/$run: backlog of $A_ORDERS orders with the slots idle"
  reset_databases
  first_start
  local journal_before
  journal_before=$(journal_bytes)
  # A native subscriber with plain tables, its slot created now, enabled later.
  # Every OLTP migration, so the subscriber has each published table and column.
  local m
  for m in "$ROOT"/schema/oltp/0*.sql; do DB=coffee_sub dst -f "$m" >/dev/null; done
  DB=coffee_sub dst -c "create subscription bench_sub connection 'host=127.0.0.1 port=$SRC_PORT user=bench dbname=coffee_oltp' publication brewlytics with (copy_data = false, enabled = false)" >/dev/null 2>&1
  "$PGBIN/pg_recvlogical" -p "$SRC_PORT" -d coffee_oltp -S bench_recv --create-slot -P pgoutput
  PGOPTIONS="-c synchronous_commit=off" pgbench_orders -t $((A_ORDERS / 8)) >>"$WORK/pgbench.log" 2>&1
  write_marker
  changes=$(( A_ORDERS / 8 * 8 * 4 + 1 ))
  DB=postgres src -c "checkpoint" >/dev/null

  say "a/$run: brewlytics replicate catching up $changes changes"
  profile_reset
  t0=$(now); start_replicator
  marker_in_olap 1800 || { echo "replicator never caught up" >&2; exit 1; }
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  profile_dump "a_$run"
  record e_rss_catchup_mb "$run" "$(peak_rss_mb "$REPL_PID")"
  forget "$REPL_PID"
  record a_brewlytics_cps "$run" "$(python3 -c "print(round($changes / $secs))")"
  record a_journal_bytes_per_change "$run" "$(python3 -c "print(round(($(journal_bytes) - $journal_before) / $changes))")"

  say "a/$run: replay --from-lsn 0/0 (the journal alone rebuilds replica and star)"
  profile_reset
  t0=$(now)
  OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" RUST_LOG="${BENCH_RUST_LOG:-warn}" \
    "$BIN" replay --from-lsn 0/0 >>"$WORK/replay.log" 2>&1
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  # A rate is only a rate of the whole journal: the replay must have read every change.
  local replayed
  replayed=$(tail -1 "$WORK/replay.log" | sed -n 's/^replayed \([0-9]*\) journal events.*/\1/p')
  [ "${replayed:-0}" -ge "$changes" ] || { echo "replay read ${replayed:-no} events of the $changes changes journaled" >&2; exit 1; }
  profile_dump "replay_$run"
  record a_replay_cps "$run" "$(python3 -c "print(round($changes / $secs))")"

  say "a/$run: native subscription catching up"
  t0=$(now)
  DB=coffee_sub dst -c "alter subscription bench_sub enable"
  marker_in_sub 1800 || { echo "subscription never caught up" >&2; exit 1; }
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  record a_subscription_cps "$run" "$(python3 -c "print(round($changes / $secs))")"
  DB=coffee_sub dst -c "alter subscription bench_sub disable"

  say "a/$run: pg_recvlogical decoding to $END_LSN"
  t0=$(now)
  timeout 1800 "$PGBIN/pg_recvlogical" -p "$SRC_PORT" -d coffee_oltp -S bench_recv --start \
    -o proto_version=1 -o publication_names=brewlytics -E "$END_LSN" -f /dev/null --no-loop
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  record a_recvlogical_cps "$run" "$(python3 -c "print(round($changes / $secs))")"
}

# ------------------------------------------------------------------------------------ b
seed_poller() { # the seed's design: every 5 s, rows with id > last seen id into OLAP
  local last=0 max
  while true; do
    max=$(src -c "select coalesce(max(id), 0) from cdc_orders_seed")
    if [ "$max" -gt "$last" ]; then
      src -c "copy (select order_id, payload from cdc_orders_seed where id > $last and id <= $max order by id) to stdout" \
        | DB=seed_olap dst -c "copy fact_sales (order_id, payload) from stdin"
      last=$max
    fi
    sleep 5
  done
}

loadtest() { # loadtest OLAP_URL ARGS...
  local olap=$1; shift
  OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$olap" "$BIN" loadtest \
    --api "http://127.0.0.1:$API_PORT" --no-progress --json "$@"
}

start_api() {
  bg api env OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" RUST_LOG="${BENCH_RUST_LOG:-warn}" \
    "$BIN" api --listen "127.0.0.1:$API_PORT"
  API_PID=$BG_PID
  wait_until 60 curl -sf "http://127.0.0.1:$API_PORT/health" -o /dev/null || { echo "the API did not start" >&2; exit 1; }
}

json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); v=eval('d'+sys.argv[2]); print(v)" "$1" "$2"; }

bench_b() {
  local run=$1 out
  say "b/$run: ${B_RATE} orders/s for ${B_SECS}s through the API, brewlytics replicating"
  reset_databases
  first_start
  start_replicator
  start_api
  out=$WORK/b_ours_$run.json
  loadtest "$OLAP_URL" --rate "$B_RATE" --mix orders --duration "${B_SECS}s" --sample 1 \
    --freshness-wait 60s > "$out"
  record b_ours_p50_ms "$run" "$(json_get "$out" "['freshness']['latency_ms']['p50']")"
  record b_ours_p99_ms "$run" "$(json_get "$out" "['freshness']['latency_ms']['p99']")"
  record b_ours_missing "$run" "$(json_get "$out" "['freshness']['missing']")"
  record b_ours_post_p99_ms "$run" "$(json_get "$out" "['endpoints'][0]['latency_ms']['p99']")"
  record b_ours_errors "$run" "$(json_get "$out" "['errors']")"
  forget "$REPL_PID"

  say "b/$run: the same load, seed design (trigger + 5 s poll)"
  src -c "create trigger cdc_orders_seed_capture after insert on orders for each row execute function cdc_orders_seed_capture()"
  DB=seed_olap dst -c "create table fact_sales (id bigserial primary key, order_id uuid not null, payload jsonb, loaded_at timestamptz default now()); create index on fact_sales (order_id)" >/dev/null
  bg seed_poller seed_poller
  local poller=$BG_PID
  out=$WORK/b_seed_$run.json
  loadtest "postgres://bench@127.0.0.1:$DST_PORT/seed_olap" --rate "$B_RATE" --mix orders \
    --duration "${B_SECS}s" --sample 1 --freshness-wait 30s > "$out"
  record b_seed_p50_ms "$run" "$(json_get "$out" "['freshness']['latency_ms']['p50']")"
  record b_seed_p99_ms "$run" "$(json_get "$out" "['freshness']['latency_ms']['p99']")"
  record b_seed_missing "$run" "$(json_get "$out" "['freshness']['missing']")"
  forget "$poller"
  forget "$API_PID"
  src -c "drop trigger cdc_orders_seed_capture on orders"
}

# ------------------------------------------------------------------------------------ c
pgbench_tps() { # pgbench_tps NAME: run C_SECS, record tps and WAL bytes per order
  local name=$1 run=$2 before after tps txs
  DB=postgres src -c "checkpoint" >/dev/null
  before=$(src -c "select pg_current_wal_lsn()")
  pgbench_orders -T "$C_SECS" > "$WORK/pgbench_$name.out" 2>&1
  after=$(src -c "select pg_current_wal_lsn()")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench_$name.out" | head -1)
  txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/pgbench_$name.out")
  record "c_${name}_tps" "$run" "$tps"
  record "c_${name}_wal_per_order" "$run" "$(src -c "select round(pg_wal_lsn_diff('$after', '$before') / $txs)")"
}

bench_c() {
  local run=$1 out
  say "c/$run: order transaction, 8 clients, ${C_SECS}s each: plain, trigger, slot consumed, API"
  reset_databases
  first_start # the slot exists from here on; "plain" drops it below
  DB=postgres src -c "select pg_drop_replication_slot('brewlytics')" >/dev/null
  # Warm up (caches, relation extension, the first checkpoint) so the first variant is not
  # penalised; alternate which of plain/trigger goes first from run to run.
  pgbench_orders -T "$C_SECS" >>"$WORK/pgbench.log" 2>&1
  local variant
  for variant in $( [ $((run % 2)) = 1 ] && echo plain trigger || echo trigger plain ); do
    if [ "$variant" = trigger ]; then
      src -c "create trigger cdc_orders_seed_capture after insert on orders for each row execute function cdc_orders_seed_capture()"
    fi
    pgbench_tps "$variant" "$run"
    src -c "drop trigger if exists cdc_orders_seed_capture on orders"
  done
  # Our slot, consumed while writing: a fresh OLAP and a new first start.
  DB=postgres dst -c "drop database coffee_olap with (force)"; DB=postgres dst -c "create database coffee_olap"
  OLTP_DATABASE_URL="$OLTP_URL" OLAP_DATABASE_URL="$OLAP_URL" "$BIN" migrate >>"$WORK/setup.log" 2>&1
  start_replicator
  checkpointed 300 || { echo "the replicator did not start" >&2; exit 1; }
  pgbench_tps slot "$run"
  # POST /orders through the API, closed loop with 8 users, one line per order (as pgbench).
  start_api
  out=$WORK/c_api_$run.json
  loadtest "$OLAP_URL" --users 8 --mix orders --items 1 --duration "${C_SECS}s" --no-freshness > "$out"
  record c_api_tps "$run" "$(json_get "$out" "['requests_per_s']")"
  record c_api_errors "$run" "$(json_get "$out" "['errors']")"
  forget "$API_PID"
  forget "$REPL_PID"
}

# ------------------------------------------------------------------------------- d + e2
bench_d() {
  local run=$1 t0 t1 secs rows i left chunk
  say "d/$run: initial copy of $D_ORDERS existing orders"
  reset_databases
  left=$D_ORDERS
  while [ "$left" -gt 0 ]; do
    chunk=$(( left < 100000 ? left : 100000 ))
    src -c "select bench_bulk_orders($chunk)" >/dev/null
    left=$((left - chunk))
  done
  DB=coffee_oltp src -c "vacuum analyze" >/dev/null
  rows=$(src -c "select (select count(*) from stores) + (select count(*) from employees) + (select count(*) from customers) + (select count(*) from products) + (select count(*) from orders) + (select count(*) from order_items) + (select count(*) from payments) + (select count(*) from inventory_movements)")
  DB=postgres src -c "checkpoint" >/dev/null

  profile_reset
  t0=$(now); start_replicator
  checkpointed 3600 || { echo "the initial copy did not finish" >&2; exit 1; }
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  profile_dump "d_$run"
  record d_brewlytics_rows_s "$run" "$(python3 -c "print(round($rows / $secs))")"
  record d_journal_bytes_per_row "$run" "$(python3 -c "print(round($(journal_bytes) / $rows))")"
  record e_rss_initial_copy_mb "$run" "$(peak_rss_mb "$REPL_PID")"
  forget "$REPL_PID"

  say "d/$run: pg_dump | psql of the same tables"
  t0=$(now)
  "$PGBIN/pg_dump" -p "$SRC_PORT" --no-publications --no-subscriptions -t stores -t employees \
    -t customers -t products -t orders -t order_items -t payments -t inventory_movements coffee_oltp \
    | DB=coffee_copy dst >/dev/null
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  record d_pgdump_rows_s "$run" "$(python3 -c "print(round($rows / $secs))")"

  say "d/$run: one transaction of $((E_ORDERS * 4)) changes, replicator started afterwards"
  src -c "select bench_bulk_orders($E_ORDERS)" >/dev/null
  write_marker
  profile_reset
  t0=$(now); start_replicator
  marker_in_olap 1800 || { echo "the large transaction never arrived" >&2; exit 1; }
  t1=$(now); secs=$(elapsed "$t0" "$t1")
  profile_dump "e_$run"
  record e_rss_big_tx_mb "$run" "$(peak_rss_mb "$REPL_PID")"
  record e_big_tx_cps "$run" "$(python3 -c "print(round($((E_ORDERS * 4)) / $secs))")"

  say "d/$run: one transaction of $((E_ORDERS * 4)) changes while the replicator streams: commit → visible"
  # The marker is the transaction's last change: visible in OLAP with the rest of it.
  MARKER="bench-marker-$RANDOM-$RANDOM"
  src -c "select pg_stat_reset_replication_slot(null)" >/dev/null
  src -c "begin" -c "select bench_bulk_orders($E_ORDERS)" \
    -c "insert into stores (name) values ('$MARKER')" -c "commit" >/dev/null
  t0=$(now)
  marker_in_olap 1800 || { echo "the large transaction never arrived" >&2; exit 1; }
  t1=$(now)
  record e_big_tx_visible_ms "$run" "$(python3 -c "print(round(($t1 - $t0) * 1000))")"
  # What the source did with it: written to its own disk (spilled, decoded again after the
  # commit) or streamed while it ran (--streaming on).
  record e_source_spill_mb "$run" "$(src -c "select round(coalesce(sum(spill_bytes), 0) / 1048576.0, 1) from pg_stat_replication_slots")"
  record e_source_stream_mb "$run" "$(src -c "select round(coalesce(sum(stream_bytes), 0) / 1048576.0, 1) from pg_stat_replication_slots")"
  forget "$REPL_PID"
}

# ------------------------------------------------------------------------------------ f
events_loaded() { # every event of click_events is in the facts
  local want got
  want=$(src -c "select count(*) from click_events")
  got=$(dst -c "select (select count(*) from fact_impressions) + (select count(*) from fact_clicks)")
  [ "$want" -gt 0 ] && [ "$want" = "$got" ]
}

bench_f() {
  local run=$1 out stats
  say "f/$run: ${F_RATE} visits/s for ${F_SECS}s (POST /events, some orders), brewlytics replicating"
  reset_databases
  first_start
  start_replicator
  start_api
  out=$WORK/f_$run.json
  loadtest "$OLAP_URL" --rate "$F_RATE" --mix browse --duration "${F_SECS}s" --no-freshness > "$out"
  wait_until 300 events_loaded || { echo "the events never all reached the facts" >&2; exit 1; }
  # Per event: received by the API → loaded in OLAP (the loading transaction's start).
  stats=$(dst -F ' ' -c "with e as (
      select received_at, loaded_at from fact_impressions
      union all select received_at, loaded_at from fact_clicks)
    select count(*) / greatest(extract(epoch from max(loaded_at) - min(received_at)), 0.001),
           1000 * extract(epoch from percentile_cont(0.5) within group (order by loaded_at - received_at)),
           1000 * extract(epoch from percentile_cont(0.99) within group (order by loaded_at - received_at))
    from e")
  record f_events_s "$run" "$(echo "$stats" | cut -d' ' -f1)"
  record f_p50_ms "$run" "$(echo "$stats" | cut -d' ' -f2)"
  record f_p99_ms "$run" "$(echo "$stats" | cut -d' ' -f3)"
  record f_errors "$run" "$(json_get "$out" "['errors']")"
  forget "$API_PID"
  forget "$REPL_PID"
}

# -------------------------------------------------------------------------------- main
say "work directory $WORK; binary $BIN; PostgreSQL $PGBIN; $RUNS run(s)$([ "$QUICK" = 1 ] && echo ", quick sizes")"
cluster "$WORK/src" SRC_PORT
cluster "$WORK/dst" DST_PORT
OLTP_URL="postgres://bench@127.0.0.1:$SRC_PORT/coffee_oltp"
OLAP_URL="postgres://bench@127.0.0.1:$DST_PORT/coffee_olap"
for run in $(seq 1 "$RUNS"); do
  want a && bench_a "$run"
  want b && bench_b "$run"
  want c && bench_c "$run"
  if want d || want e; then bench_d "$run"; fi
  want f && bench_f "$run"
done
[ -n "${BENCH_RESULTS:-}" ] && cp "$RESULTS" "$BENCH_RESULTS"
python3 "$HERE/report.py" "$RESULTS" --runs "$RUNS" --quick "$QUICK" \
  --sizes "a=$A_ORDERS orders ($((A_ORDERS * 4)) changes), b=$B_RATE orders/s for ${B_SECS}s, c=${C_SECS}s per variant, d=$D_ORDERS orders, e=$((E_ORDERS * 4))-change transaction, f=$F_RATE visits/s for ${F_SECS}s"
