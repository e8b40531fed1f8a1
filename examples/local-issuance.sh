#!/usr/bin/env bash
# A complete local issuance: acme-bridge gets a certificate for example.test and
# *.example.test from a private Pebble (the ACME test server), solving dns-01 through the
# bundled example consumer (examples/consumer.py), which publishes the TXT records in
# pebble-challtestsrv's mock DNS server. Nothing leaves this machine.
#
#   bash examples/local-issuance.sh
#
# Environment:
#   KEEP=1               keep the work directory (certificates, account, logs) and print it
#   ACME_BRIDGE_BIN=...  use this binary instead of building target/release/acme-bridge
#
# Installs the Debian package "pebble" when it is missing (as root, or with sudo).
# Progress goes to stderr; the result (certificate message, certificate details, live/
# listing) goes to stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tests/lib.sh
. tests/lib.sh
AB_LOG_TAG=local-issuance

# --- 1. Tools ---------------------------------------------------------------------------
ab_ensure_pebble
ab_ensure_python3
ab_ensure_openssl

if [ -n "${ACME_BRIDGE_BIN:-}" ]; then
    BIN=$ACME_BRIDGE_BIN
    ab_log "using $BIN"
else
    command -v cargo >/dev/null 2>&1 || ab_die "cargo not found: install Rust (https://rustup.rs)"
    ab_log "building acme-bridge (cargo build --release)"
    # shellcheck disable=SC2046 # ab_cargo_locked prints nothing or one word
    cargo build --release $(ab_cargo_locked) --bin acme-bridge
    BIN="$(ab_cargo_target_dir)/release/acme-bridge"
fi
[ -x "$BIN" ] || ab_die "no executable at $BIN"

# --- 2. A work directory, removed on exit together with the servers ---------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/acme-bridge-example.XXXXXX")
CHALL_PID=""
PEBBLE_PID=""
cleanup() {
    local rc=$?
    for pid in "$PEBBLE_PID" "$CHALL_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "$rc" -ne 0 ]; then
        for log in pebble.log challtestsrv.log; do
            if [ -s "$WORK/$log" ]; then
                printf '\n----- %s (last 60 lines) -----\n' "$log" >&2
                tail -n 60 "$WORK/$log" >&2
            fi
        done
        ab_log "FAILED (exit status $rc)"
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        ab_log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ab_log "work directory: $WORK"

# --- 3. A throwaway CA and an HTTPS certificate for Pebble (localhost, 127.0.0.1) -------
# Pebble ships no certificate for its own HTTPS listener. acme-bridge trusts this CA
# through --ca-bundle. (The certificates Pebble ISSUES come from another, in-memory CA.)
ab_log "generating a throwaway CA and Pebble's TLS certificate with openssl"
cat >"$WORK/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = acme-bridge example throwaway CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
{
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -config "$WORK/openssl.cnf" -extensions ca_ext \
        -keyout "$WORK/ca.key" -out "$WORK/ca.pem"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -config "$WORK/openssl.cnf" -subj /CN=localhost \
        -keyout "$WORK/pebble.key" -out "$WORK/pebble.csr"
    openssl x509 -req -days 2 -in "$WORK/pebble.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" \
        -extfile "$WORK/openssl.cnf" -extensions server_ext -out "$WORK/pebble.pem"
} 2>"$WORK/openssl.log" || { cat "$WORK/openssl.log" >&2; ab_die "openssl failed"; }

# --- 4. Start pebble-challtestsrv (mock DNS) and Pebble on free loopback ports ----------
read -r -d '' MGMT DNS ACME PEBBLE_MGMT HTTP_PORT TLS_PORT < <(ab_free_ports 6) || true
[ -n "$TLS_PORT" ] || ab_die "could not pick free ports"

# Only the DNS server and the management API: the consumer publishes dns-01 records.
# -defaultIPv6 "": otherwise the mock DNS answers AAAA with ::1 and Pebble dials it.
ab_log "starting pebble-challtestsrv: management 127.0.0.1:$MGMT, DNS 127.0.0.1:$DNS"
pebble-challtestsrv -management "127.0.0.1:$MGMT" -dns01 "127.0.0.1:$DNS" \
    -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv6 "" -defaultIPv4 127.0.0.1 \
    >"$WORK/challtestsrv.log" 2>&1 &
CHALL_PID=$!

# httpPort/tlsPort are where Pebble would validate http-01/tls-alpn-01: unused here.
cat >"$WORK/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$ACME",
    "managementListenAddress": "127.0.0.1:$PEBBLE_MGMT",
    "certificate": "$WORK/pebble.pem",
    "privateKey": "$WORK/pebble.key",
    "httpPort": $HTTP_PORT,
    "tlsPort": $TLS_PORT,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
# NOSLEEP: validate at once; NONCEREJECT=0: no deliberate badNonce errors.
ab_log "starting pebble: ACME directory https://127.0.0.1:$ACME/dir"
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    pebble -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$DNS" >"$WORK/pebble.log" 2>&1 &
PEBBLE_PID=$!

ab_wait_http "http://127.0.0.1:$MGMT/" "$CHALL_PID" 30 || ab_die "pebble-challtestsrv did not start"
ab_wait_https "https://127.0.0.1:$ACME/dir" "$WORK/ca.pem" "$PEBBLE_PID" 30 || ab_die "pebble did not start"
ab_log "servers are up"

# --- 5. The issuance: acme-bridge talks JSON lines with the example consumer ------------
# The consumer prints the final "certificate" message on stdout; keep it in a file.
# timeout: a safety net so a stuck run cannot hang CI (SIGTERM -> acme-bridge cleans up);
# --foreground lets Ctrl-C reach acme-bridge, which then cleans up and exits 5.
ab_log "running: acme-bridge issue -d example.test -d '*.example.test' --challenge dns-01"
rc=0
timeout --foreground --kill-after=30 "${AB_EXAMPLE_TIMEOUT:-300}" \
    python3 examples/consumer.py --challtestsrv "http://127.0.0.1:$MGMT" -- \
    "$BIN" issue -d example.test -d '*.example.test' --challenge dns-01 \
    --server "https://127.0.0.1:$ACME/dir" --ca-bundle "$WORK/ca.pem" \
    --config-dir "$WORK/config" --agree-tos --email ops@example.test \
    >"$WORK/certificate.json" || rc=$?
case $rc in
    0) ;;
    124) ab_log "error: the issuance did not finish within ${AB_EXAMPLE_TIMEOUT:-300}s"; exit 1 ;;
    *) ab_log "error: the issuance failed: exit status $rc (see acme-bridge's exit codes)"; exit "$rc" ;;
esac

# --- 6. Show and check the result ------------------------------------------------------
LIVE="$WORK/config/live/example.test"
echo "== certificate message (consumer stdout)"
cat "$WORK/certificate.json"
echo "== openssl x509 -in $LIVE/cert.pem"
openssl x509 -noout -subject -ext subjectAltName -dates -in "$LIVE/cert.pem" | tee "$WORK/x509.txt"
echo "== ls -l $WORK/config/live/example.test"
ls -l "$LIVE"

for san in 'DNS:example.test' 'DNS:\*.example.test'; do
    grep -q "$san" "$WORK/x509.txt" || ab_die "the certificate lacks $san"
done
# The chain must lead to the root Pebble used for this run (it changes at every start).
python3 - "https://127.0.0.1:$PEBBLE_MGMT/roots/0" "$WORK/ca.pem" >"$WORK/pebble-root.pem" <<'EOF'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
sys.stdout.write(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10).read().decode())
EOF
openssl verify -CAfile "$WORK/pebble-root.pem" -untrusted "$LIVE/chain.pem" "$LIVE/cert.pem" >&2 \
    || ab_die "cert.pem + chain.pem do not verify against Pebble's root"
ab_log "OK: issued a certificate for example.test and *.example.test; chain verifies against Pebble's root"

# --- 7. Renewal: the same consumer, acme-bridge renew -----------------------------------
# renew finds everything it needs in renewal/example.test.json (server, CA bundle,
# names, challenge type, mode); --force because a fresh certificate is not due yet.
ab_log "running: acme-bridge renew --force"
rc=0
timeout --foreground --kill-after=30 "${AB_EXAMPLE_TIMEOUT:-300}" \
    python3 examples/consumer.py --challtestsrv "http://127.0.0.1:$MGMT" -- \
    "$BIN" --config-dir "$WORK/config" renew --force >"$WORK/renewed.json" || rc=$?
[ "$rc" -eq 0 ] || ab_die "the renewal failed: exit status $rc"
[ "$(readlink "$LIVE/cert.pem")" = "../../archive/example.test/cert2.pem" ] \
    || ab_die "live/example.test does not point at version 2 after renew"
openssl verify -CAfile "$WORK/pebble-root.pem" -untrusted "$LIVE/chain.pem" "$LIVE/cert.pem" >&2 \
    || ab_die "the renewed certificate does not verify against Pebble's root"
ab_log "OK: renewed example.test unattended (version 2); live/ moved to it"
