#!/usr/bin/env bash
# Regenerates docs/engines.md: judges every shipped protocol-2 adapter with the property suites
# and the exec-door battles (`battle --adapter --kind`, one run per limiter kind), and tabulates
# the verdicts. `bash scripts/engines.sh [LOGS]` (after .ci/run's installs).
# An engine with a failing property is the point of the table, not an error of this script.
set -euo pipefail
cd "$(dirname "$0")/.."
logs="${1:-target/engine-logs}/engines"
rm -rf "$logs"
mkdir -p "$logs"
cargo build --quiet
judge() {
  local name="$1" adapter="$2"
  echo "== $name: $adapter" >&2
  set +e
  # Interpreters importing large engines on a busy machine are slow to answer; that is no defect.
  target/debug/tk-conform run --backend exec --adapter "$adapter" --adapter-timeout-ms 20000 \
    --logs "$logs/$name" >"$logs/$name.out" 2>&1
  echo $? >"$logs/$name.rc"
  set -e
  tail -n 1 "$logs/$name.out" >&2
  # 0: all passed; 1: a property failed. Anything else (2: could not start) stops the script.
  [ "$(cat "$logs/$name.rc")" -le 1 ] || { cat "$logs/$name.out" >&2; exit 2; }
}
# The exec scenarios, once per limiter kind, with a fixed seed (the kill instants). They run
# after every property run, so their eight adapters per scenario do not slow the property
# suites' real-time trials into timeouts.
battles() {
  local name="$1" adapter="$2" kind
  shift 2
  for kind in "$@"; do
    set +e
    target/debug/tk-conform battle --adapter "$adapter" --kind "$kind" --seed 7 \
      --logs "$logs/$name.battle.$kind" >"$logs/$name.battle.$kind.out" 2>&1
    echo $? >"$logs/$name.battle.$kind.rc"
    set -e
    echo "== $name $kind: $(tail -n 2 "$logs/$name.battle.$kind.out" | head -n 1)" >&2
    [ "$(cat "$logs/$name.battle.$kind.rc")" -le 1 ] || { cat "$logs/$name.battle.$kind.out" >&2; exit 2; }
  done
}
limits=".venv-engines-3.11/bin/python adapters/python/limits_redis.py"
rlf="node adapters/node/rate_limiter_flexible.mjs"
rate_sync=".venv-rate-sync-3.12/bin/python adapters/python/rate_sync.py"
derp=".venv-derp-3.12/bin/python adapters/python/derp_kv.py"
# The engines run side by side (each run starts its own Redis): first the property suites,
# then the battles.
judge limits "$limits" &
judge rate-limiter-flexible "$rlf" &
judge rate-sync "$rate_sync" &
judge derp-py "$derp" &
for job in $(jobs -p); do wait "$job" || exit 2; done
battles limits "$limits" fixed moving sliding &
battles rate-limiter-flexible "$rlf" atomic nonAtomic &
battles rate-sync "$rate_sync" window rate &
battles derp-py "$derp" fixed &
for job in $(jobs -p); do wait "$job" || exit 2; done
python3 scripts/engines_table.py "$logs" limits rate-limiter-flexible rate-sync derp-py >docs/engines.md
echo "docs/engines.md regenerated from $logs" >&2
