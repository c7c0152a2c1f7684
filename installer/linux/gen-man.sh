#!/usr/bin/env bash
# gen-man.sh - build easgate(8) from its template and the daemon's own option table.
#
# Usage: gen-man.sh EASGATE TEMPLATE OUT
#
# EASGATE is the built daemon: its `--help` (generated from the one option table in
# agent/config.c) becomes the OPTIONS list in place of the template's @OPTIONS@ line, and its
# `--version` fills @VERSION@, so the man page cannot drift from the code. Writes OUT (roff) and
# OUT.gz (gzip -9n, as Debian installs man pages). Exits non-zero if --help cannot be parsed.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 EASGATE TEMPLATE OUT" >&2
    exit 2
fi
easgate=$1 template=$2 out=$3

version=$("$easgate" --version | sed -n 's/^easgate \([^ ]*\)$/\1/p')
[ -n "$version" ] || { echo "gen-man.sh: $easgate --version did not print 'easgate VERSION'" >&2; exit 1; }
help=$("$easgate" --help)

# --help lists each option as three lines:
#   "  --name ARG"            the synopsis (ARG absent for booleans: "--[no-]name")
#   "      help text"
#   "      file key ..., env EASGATE_X, default: D"   (or "not in the file, env ...")
options=$(printf '%s\n' "$help" | awk '
    function esc(s) { gsub(/\\/, "\\e", s); return s }
    function opt(s) { s = esc(s); gsub(/-/, "\\-", s); return s }
    /^Options:$/ { in_opts = 1; next }
    !in_opts { next }
    /^  --/ {
        if (state != 0) { bad = 1 }
        line = substr($0, 3)
        flag = line; arg = ""
        sp = index(line, " ")
        if (sp) { flag = substr(line, 1, sp - 1); arg = substr(line, sp + 1) }
        printf ".TP\n\\fB%s\\fR", opt(flag)
        if (arg != "") {
            # "N (1..64)": the placeholder in italics, the range as text
            rp = index(arg, " (")
            if (rp) printf " \\fI%s\\fR %s", esc(substr(arg, 1, rp - 1)), esc(substr(arg, rp + 1))
            else printf " \\fI%s\\fR", esc(arg)
        }
        printf "\n"
        state = 1; n++
        next
    }
    /^      / {
        text = substr($0, 7)
        text = esc(text)
        if (text !~ /\.$/) text = text "."
        if (state == 1) { printf "\\&%s\n", text; state = 2; next }
        if (state == 2) { printf ".br\n\\&%s\n", text; state = 0; next }
        bad = 1; next
    }
    /^$/ { next }
    { bad = 1 }
    END {
        if (bad || state != 0 || n == 0) { print "gen-man.sh: unexpected --help layout" > "/dev/stderr"; exit 1 }
    }')

tmp="$out.tmp.$$"
trap 'rm -f "$tmp" "$tmp.opts"' EXIT
printf '%s\n' "$options" >"$tmp.opts"
awk -v version="$version" -v optfile="$tmp.opts" '
    $0 == "@OPTIONS@" { while ((getline l < optfile) > 0) print l; found = 1; next }
    { gsub(/@VERSION@/, version); print }
    END { if (!found) { print "gen-man.sh: template has no @OPTIONS@ line" > "/dev/stderr"; exit 1 } }
' "$template" >"$tmp"
mv "$tmp" "$out"
gzip -9n -c "$out" >"$out.gz"
