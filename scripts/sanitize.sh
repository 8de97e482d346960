#!/usr/bin/env bash
# The suite under AddressSanitizer, then the epoll-driver tests under
# valgrind (which cannot follow io_uring: the kernel writes through the
# rings behind its back). Neither can see the kernel write into a freed
# buffer: tests/net_cancel.rs checks that with canaries.
#
#   bash scripts/sanitize.sh            # both
#   bash scripts/sanitize.sh asan       # one
#   bash scripts/sanitize.sh valgrind
#
# Needs the nightly-free stable toolchain (RUSTC_BOOTSTRAP unlocks
# -Zsanitizer) and valgrind (apt-get install valgrind). Separate target
# directories keep the normal build untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
target="$(rustc -vV | sed -n 's/^host: //p')"

if [[ "$what" == all || "$what" == asan ]]; then
    echo "== AddressSanitizer: cargo test --target $target (lib and tests; doctests skipped)"
    # Leak checking stays on: a leak the runtime makes on purpose (an
    # op still in flight at the drain deadline) is not reached by the tests.
    # The example binaries some tests run are built first, with the same
    # flags: `--lib --tests` alone would leave an older build's in place.
    RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
        cargo build --all-features --target "$target" --examples
    RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
        CARGO_TARGET_DIR=target/asan ASAN_OPTIONS="detect_leaks=1" \
        cargo test --no-fail-fast --all-features --target "$target" --lib --tests
fi

if [[ "$what" == all || "$what" == valgrind ]]; then
    command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
    echo "== valgrind: the epoll-driver tests"
    CARGO_TARGET_DIR=target/valgrind cargo build --all-features --examples 2>&1 | tail -1
    CARGO_TARGET_DIR=target/valgrind cargo test --all-features --no-run --tests 2>&1 | tail -1
    # Tests that assert CPU time or latency cannot hold at valgrind's speed;
    # these check bytes, errors and ends (binary, or binary:name filter;
    # net_echo's 256-connection test would take most of an hour).
    for test in net_eof net_faults net_bad_input net_echo:udp net_echo:unix compat_io compat_hyper:server_and_client fs; do
        name="${test%%:*}"
        filter="${test#*:}"
        [[ "$filter" == "$test" ]] && filter=""
        binary="$(find target/valgrind/debug/deps -maxdepth 1 -type f -executable -name "$name-*" | head -1)"
        echo "-- $test"
        RINGSHARD_TEST_DRIVERS=epoll valgrind --quiet --error-exitcode=99 \
            "$binary" --test-threads=1 $filter
    done
fi
echo "== sanitize.sh: all clean"
