#!/usr/bin/env bash
# The test command of acme-bridge: runs every check the project has.
#
#   bash tests/all.sh            all steps, in order (what .ci/run does)
#   bash tests/all.sh fmt test   only the named steps (see STEPS below)
#
# Works on a fresh Debian machine as root (CI) and for a developer (uses sudo only to
# install missing Debian packages). Safe to run again and again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tests/lib.sh
. tests/lib.sh
AB_LOG_TAG=tests

# Each step is a function named step_<name>. To add one (ansible-core, puppet, ruby, an
# acme2certifier venv, ...): write step_<name>, install what it needs inside it with
# ab_apt_install / ab_ensure_cmd, and add <name> to STEPS.
STEPS=(prerequisites fmt clippy test example)

step_prerequisites() {
    ab_ensure_pebble
    ab_ensure_python3
    ab_ensure_openssl
    ab_ensure_acme2certifier
    command -v cargo >/dev/null 2>&1 || ab_die "cargo not found: install Rust (https://rustup.rs)"
    # rustfmt and clippy are in rustup's default profile, but not in a minimal one.
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || ab_die "cargo fmt / cargo clippy are missing"
        rustup component add rustfmt clippy
    fi
    ab_log "pebble: $(command -v pebble), python3: $(python3 --version 2>&1), $(cargo --version)"
    ab_log "acme2certifier $AB_A2C_VERSION: $(ab_a2c_venv)"
}

step_fmt() {
    cargo fmt --all -- --check
}

step_clippy() {
    # shellcheck disable=SC2046 # ab_cargo_locked prints nothing or one word
    cargo clippy --all-targets $(ab_cargo_locked) -- -D warnings
}

step_test() {
    # All tests: unit tests, doc tests and the integration binary tests/it (which
    # starts its own Pebble and pebble-challtestsrv).
    # shellcheck disable=SC2046
    cargo test $(ab_cargo_locked)
    # cargo test also built target/debug/acme-bridge, for the integration tests.
    AB_BINARY_BUILT=1
}

step_example() {
    # The main job, end to end: a real issuance against a local Pebble, driven by the
    # bundled example consumer.
    # It reuses the debug binary the test step built (a plain `cargo build` would
    # compile the crate again: the test build has the dev-dependencies' features).
    if [ -z "${AB_BINARY_BUILT:-}" ]; then
        # shellcheck disable=SC2046
        cargo build $(ab_cargo_locked) --bin acme-bridge
    fi
    ACME_BRIDGE_BIN="$(ab_cargo_target_dir)/debug/acme-bridge" bash examples/local-issuance.sh
}

if [ "$#" -gt 0 ]; then
    STEPS=("$@")
fi
for step in "${STEPS[@]}"; do
    declare -F "step_$step" >/dev/null || ab_die "unknown step '$step'; known: $(declare -F | sed -n 's/^declare -f step_//p' | tr '\n' ' ')"
done

# Say which step failed (set -e stops the run at the first failing command).
current_step=""
report_failure() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$current_step" ]; then
        printf '\n==> tests/all.sh: FAILED in step %s (exit status %s)\n' "$current_step" "$rc" >&2
    fi
}
trap report_failure EXIT

started=$SECONDS
for step in "${STEPS[@]}"; do
    ab_step "tests/all.sh: $step"
    current_step=$step
    step_started=$SECONDS
    "step_$step"
    ab_log "$step: ok ($((SECONDS - step_started))s)"
done
current_step=""
ab_step "tests/all.sh: all ${#STEPS[@]} steps passed in $((SECONDS - started))s (${STEPS[*]})"
