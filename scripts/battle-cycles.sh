#!/usr/bin/env bash
# Fails (exit 1) when two modules of src/battle/ depend on each other, directly or through
# others. A module is a file under src/battle/ (checker/* counts as `checker`); it depends on
# every sibling it names as `super::X` or `crate::battle::X`. tsort finds the loops.
set -euo pipefail
cd "$(dirname "$0")/../src/battle"
edges=$(
  for file in *.rs checker/*.rs; do
    case $file in
      mod.rs) continue ;;
      checker/*) from=checker; pattern='crate::battle::[a-z_]+' ;;
      *) from=${file%.rs}; pattern='(super|crate::battle)::[a-z_]+' ;;
    esac
    grep -oE "$pattern" "$file" | sed -E 's/.*:://' | sort -u | while read -r to; do
      [ "$to" != "$from" ] && [ -e "$to.rs" -o -d "$to" ] && echo "$from $to"
    done
  done
)
echo "$edges" | sed 's/^/  /'
if ! loops=$(echo "$edges" | tsort 2>&1 >/dev/null) || [ -n "$loops" ]; then
  echo "import cycle in src/battle:" >&2
  echo "$loops" >&2
  exit 1
fi
echo "no import cycle in src/battle"
