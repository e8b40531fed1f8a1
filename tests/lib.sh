# shellcheck shell=bash
# Shared helpers for tests/all.sh and examples/local-issuance.sh.
# Source this file (". tests/lib.sh"); it defines functions only and changes nothing.
#
# Conventions: every helper is prefixed "ab_", progress goes to stderr, and a helper
# that cannot do its job exits the calling script with a message that says what to do.

# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------

# ab_log MESSAGE...   one progress line on stderr
ab_log() {
    printf '[%s] %s\n' "${AB_LOG_TAG:-acme-bridge}" "$*" >&2
}

# ab_step TITLE...    a heading that separates the steps of a long run
ab_step() {
    printf '\n==> %s\n' "$*" >&2
}

# ab_die MESSAGE...   print an error and leave the calling script with status 1
ab_die() {
    printf '[%s] error: %s\n' "${AB_LOG_TAG:-acme-bridge}" "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------
# Installing Debian packages (CI runs as root on a fresh Debian machine; a developer
# usually has sudo)
# ---------------------------------------------------------------------------------------

# ab_as_root CMD ARGS...   run a command as root: directly when we are root, else via sudo
ab_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        ab_die "need root to run '$*' (not root, and sudo is not installed); run it as root and retry"
    fi
}

# ab_apt_install PACKAGE...   apt-get install, with one 'apt-get update' per script run
ab_apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || ab_die "apt-get not found: install these packages with your package manager: $*"
    if [ -z "${AB_APT_UPDATED:-}" ]; then
        ab_log "apt-get update"
        ab_as_root env DEBIAN_FRONTEND=noninteractive apt-get update \
            || ab_die "apt-get update failed"
        AB_APT_UPDATED=1
    fi
    ab_log "apt-get install -y $*"
    ab_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" \
        || ab_die "apt-get install $* failed"
}

# ab_ensure_cmd COMMAND PACKAGE   install PACKAGE when COMMAND is not on PATH
ab_ensure_cmd() {
    local cmd=$1 pkg=$2
    if ! command -v "$cmd" >/dev/null 2>&1; then
        ab_log "$cmd not found; installing the Debian package $pkg"
        ab_apt_install "$pkg"
        command -v "$cmd" >/dev/null 2>&1 \
            || ab_die "$cmd is still missing after installing $pkg"
    fi
}

# ab_ensure_pebble   Pebble (the ACME test server) and pebble-challtestsrv (mock DNS and
# challenge responders), both from the Debian package "pebble"
ab_ensure_pebble() {
    if command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1; then
        return 0
    fi
    ab_log "pebble or pebble-challtestsrv not found; installing the Debian package pebble"
    ab_apt_install pebble
    command -v pebble >/dev/null 2>&1 || ab_die "pebble is still missing after installing it"
    command -v pebble-challtestsrv >/dev/null 2>&1 \
        || ab_die "pebble-challtestsrv is still missing after installing pebble"
}

# ab_ensure_python3   the bundled example consumer and these scripts need Python >= 3.11
ab_ensure_python3() {
    ab_ensure_cmd python3 python3
    python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || ab_die "python3 >= 3.11 is needed, found $(python3 --version 2>&1)"
}

# ab_ensure_openssl   used to make a throwaway CA and Pebble's HTTPS certificate
ab_ensure_openssl() {
    ab_ensure_cmd openssl openssl
}

# ---------------------------------------------------------------------------------------
# acme2certifier (a second ACME server for the integration tests, with ARI and profiles)
# ---------------------------------------------------------------------------------------

# The release the test harness (tests/it/a2c_harness.rs) is written against.
AB_A2C_VERSION=0.46.3

# ab_a2c_venv   the virtual environment the tests look for, under the (gitignored) target/
# directory of the repository; run from the repository root
ab_a2c_venv() {
    printf '%s\n' "$PWD/target/a2c-venv"
}

# ab_ensure_acme2certifier   acme2certifier $AB_A2C_VERSION in $(ab_a2c_venv), installed
# with pip from PyPI when missing or of another version. `python3 -m venv` needs Debian's
# python3-venv (ensurepip) on a Debian python3; it is installed when venv creation fails.
ab_ensure_acme2certifier() {
    local venv python
    venv=$(ab_a2c_venv)
    python=$venv/bin/python3
    if [ -x "$python" ] && "$python" - "$AB_A2C_VERSION" >/dev/null 2>&1 <<'EOF'
import importlib.metadata, sys
import acme2certifier.cahandlers.openssl_ca_handler  # what the harness loads
sys.exit(0 if importlib.metadata.version("acme2certifier") == sys.argv[1] else 1)
EOF
    then
        return 0
    fi
    ab_log "installing acme2certifier $AB_A2C_VERSION into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        ab_log "python3 -m venv failed; installing the Debian package python3-venv"
        ab_apt_install python3-venv
        python3 -m venv "$venv" || ab_die "python3 -m venv $venv fails even with python3-venv installed"
    fi
    "$python" -m pip install --quiet --disable-pip-version-check "acme2certifier==$AB_A2C_VERSION" \
        || ab_die "pip install acme2certifier==$AB_A2C_VERSION into $venv failed (see above)"
    "$python" -c 'import acme2certifier.cahandlers.openssl_ca_handler' \
        || ab_die "acme2certifier was installed into $venv but does not import (see above)"
}

# ---------------------------------------------------------------------------------------
# Cargo
# ---------------------------------------------------------------------------------------

# ab_cargo_locked   prints "--locked" when Cargo.lock exists (run from the repository root)
ab_cargo_locked() {
    if [ -f Cargo.lock ]; then
        printf '%s\n' --locked
    fi
}

# ab_cargo_target_dir   where cargo puts its output (honours CARGO_TARGET_DIR and
# .cargo/config.toml); run from the repository root
ab_cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# ---------------------------------------------------------------------------------------
# Local servers
# ---------------------------------------------------------------------------------------

# ab_free_ports N   prints N distinct free TCP ports on 127.0.0.1, one per line. They are
# all held open at the same time while being picked, so they are distinct; another
# program could still take one before we use it (rare; rerun).
ab_free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# ab_wait_https URL CA_FILE PID SECONDS   wait until URL answers 200 over HTTPS trusting
# CA_FILE; fail early when process PID has exited. curl may be missing on a fresh
# machine, python3 is not.
ab_wait_https() {
    python3 - "$@" <<'EOF'
import os, ssl, sys, time, urllib.request
url, cafile, pid, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ctx = ssl.create_default_context(cafile=cafile)
deadline = time.monotonic() + seconds
last = "no attempt"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"process {pid} exited while waiting for {url}")
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
            last = f"HTTP {resp.status}"
    except Exception as e:  # not up yet: connection refused, TLS not ready, ...
        last = str(e)
    time.sleep(0.2)
sys.exit(f"{url} did not answer within {seconds:.0f}s (last error: {last})")
EOF
}

# ab_wait_http URL PID SECONDS   same as ab_wait_https for a plain-HTTP endpoint that
# answers any HTTP status (pebble-challtestsrv's management API answers 404 on "/")
ab_wait_http() {
    python3 - "$@" <<'EOF'
import os, sys, time, urllib.error, urllib.request
url, pid, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + seconds
last = "no attempt"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"process {pid} exited while waiting for {url}")
    try:
        urllib.request.urlopen(url, timeout=2).close()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # it answered
    except Exception as e:
        last = str(e)
    time.sleep(0.2)
sys.exit(f"{url} did not answer within {seconds:.0f}s (last error: {last})")
EOF
}
