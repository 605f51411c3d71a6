#!/usr/bin/env bash
# Instructions per received datagram of established-connection traffic, quicpeer vs bare
# quinn-proto, counted by callgrind: deterministic, so comparable between commits (unlike
# times). Counts only `quicpeer_bench::endpoint::receive` (B handles the datagram, reads the
# stream, sends its ACKs and asks for its next timeout, as a driver does), at two workload
# lengths; the difference over the difference in datagrams cancels the warm-up.
#
# Usage: benches/callgrind.sh [SHORT LONG]   (default 5000 25000 datagrams)
set -euo pipefail
cd "$(dirname "$0")/.."
short=${1:-5000}
long=${2:-25000}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }

exe=$(cargo bench --bench per_datagram_callgrind --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*per_datagram_callgrind[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$exe" ] || { echo "could not build the per_datagram_callgrind bench" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

count() { # stack datagrams -> instructions in receive()
  valgrind --tool=callgrind --callgrind-out-file="$work/out" \
    --toggle-collect='quicpeer_bench::endpoint::receive*' \
    "$exe" "$1" "$2" >/dev/null 2>"$work/log"
  awk '/^(summary|totals):/ { print $2; exit }' "$work/out"
}

printf '%-10s %14s %14s %18s\n' stack "Ir@$short" "Ir@$long" "Ir/datagram"
declare -A per
for stack in quicpeer quinn; do
  a=$(count "$stack" "$short")
  b=$(count "$stack" "$long")
  per[$stack]=$(( (b - a) / (long - short) ))
  printf '%-10s %14s %14s %18s\n' "$stack" "$a" "$b" "${per[$stack]}"
done
awk -v q="${per[quicpeer]}" -v b="${per[quinn]}" \
  'BEGIN { printf "ratio quicpeer/quinn: %.2f\n", q / b }'
