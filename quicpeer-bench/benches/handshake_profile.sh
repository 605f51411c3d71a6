#!/usr/bin/env bash
# Where a handshake's instructions go, quicpeer (mutual libp2p authentication) against bare
# quinn-proto (server-only, self-signed P-256), counted by callgrind in
# `quicpeer_bench::handshake::cycles` only (the endpoints are built before it). Prints, per
# handshake, the total and the inclusive cost of each part; parts nest (rustls calls ring),
# so they do not add up.
#
# Usage: benches/handshake_profile.sh [HANDSHAKES]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-200}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
command -v callgrind_annotate >/dev/null || { echo "callgrind_annotate is not installed" >&2; exit 2; }

exe=$(cargo bench --bench handshake_callgrind --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*handshake_callgrind[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$exe" ] || { echo "could not build the handshake_callgrind bench" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# part label and a pattern of callgrind_annotate's `file:function` column; the largest
# inclusive cost of the matching functions is taken
parts=(
  "TLS (rustls, all of it)|rustls::conn::ConnectionCore<Data>::process_new_packets"
  "ECDSA P-256 sign|ring::ec::suite_b::ecdsa::signing::EcdsaKeyPair::sign"
  "ECDSA P-256 verify|ring::ec::suite_b::ecdsa::verification::"
  "Ed25519 verify (host key)|ed25519_dalek::verifying::"
  "X25519 key generation|x25519::x25519_public_from_private"
  "X25519 agreement|x25519::x25519_ecdh"
  "libp2p certificate check|quicpeer::identity::certificate::verify_certificate"
  "  of which self-signature|x509_parser::certificate::X509Certificate::verify_signature"
)

for stack in quicpeer quinn; do
  valgrind --tool=callgrind --callgrind-out-file="$work/$stack" \
    --toggle-collect='quicpeer_bench::handshake::cycles*' \
    "$exe" "$stack" "$count" >/dev/null 2>"$work/$stack.log"
  callgrind_annotate --inclusive=yes --threshold=100 "$work/$stack" > "$work/$stack.txt" 2>/dev/null
done

total() { awk '/^(summary|totals):/ { print $2; exit }' "$work/$1"; }
part() { # stack pattern -> largest inclusive Ir of matching functions
  awk -v pat="$2" '
    $1 ~ /^[0-9,]+$/ {
      ir = $1; gsub(",", "", ir)
      if (index($0, pat) > 0 && ir + 0 > best) best = ir + 0
    }
    END { print best + 0 }' "$work/$1.txt"
}

printf '%-28s %16s %16s\n' "instructions per handshake" quicpeer quinn
printf '%-28s %16d %16d\n' "total" $(( $(total quicpeer) / count )) $(( $(total quinn) / count ))
for entry in "${parts[@]}"; do
  label=${entry%%|*}; pat=${entry#*|}
  printf '%-28s %16d %16d\n' "$label" $(( $(part quicpeer "$pat") / count )) $(( $(part quinn "$pat") / count ))
done
