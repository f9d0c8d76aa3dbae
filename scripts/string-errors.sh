#!/usr/bin/env bash
# Fails (exit 1), listing each place, when code under src/ (or the folder given) returns a bare
# `String` as an error: `Result<T, String>` or `Ok::<T, String>`. Errors are enums with their
# cause kept as `#[source]` (ARCHITECTURE.md).
set -euo pipefail
root=${1:-"$(dirname "$0")/../src"}
if [ ! -d "$root" ]; then
  echo "string-errors.sh: $root is not a folder (give the source folder to scan, default src/)" >&2
  exit 2
fi
found=$(find "$root" -name '*.rs' -print0 | xargs -0 -r perl -0777 -ne '
  while (/((?:Result|(?:Ok|Err)::)<(?:[^<>;{}]|<(?:[^<>]|<[^<>]*>)*>)*?,\s*String\s*>)/g) {
    my $line = 1 + (substr($_, 0, $-[1]) =~ tr/\n//);
    (my $text = $1) =~ s/\s+/ /g;
    print "$ARGV:$line: $text\n";
  }')
if [ -n "$found" ]; then
  echo "a String as an error type (use an error enum with #[source]):" >&2
  echo "$found" >&2
  exit 1
fi
echo "no Result<_, String> in $root"
