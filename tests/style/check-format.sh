#!/usr/bin/env bash
# Fails when any C source or header of the project differs from .clang-format's layout.
# Usage: check-format.sh SOURCE_DIR   (ctest passes it). Fix with: clang-format -i FILE
set -euo pipefail
cd "$1"
mapfile -t files < <(find common agent transport exchange tests bench installer \
                          -name '*.[ch]' -not -path '*/corpus/*' 2>/dev/null | sort)
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (run: clang-format -i $f)"
    bad=1
  fi
done
echo "${#files[@]} files checked"
exit $bad
