#!/usr/bin/env bash
# Miri over the code without libtorch: the timeout future (its pin
# projection), the shared timer, the test clock, the call-site list, the
# breaker, the classifier, the duration rules. Every filter must match: a
# run that selects fewer tests than named fails. Needs the nightly toolchain with its miri
# component (added here if missing). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
cargo +nightly miri setup >/dev/null
# Real time, for the timer thread; Miri runs far slower than the clock, so
# tests that race the clock tolerate it (see `cfg!(miri)`).
# futures-timer's helper thread outlives every test: not a leak of ours.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-ignore-leaks}"
# Runs one test target under Miri and fails unless it ran at least `$1`
# tests: a filter that matches nothing must not pass silently.
run() {
    local want=$1
    shift
    local out
    out=$(cargo +nightly miri test "$@" 2>&1 | tee -a /dev/stderr)
    local ran
    ran=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' <<<"$out" | tail -1)
    if [ -z "$ran" ] || [ "$ran" -lt "$want" ]; then
        echo "miri.sh: cargo miri test $* ran ${ran:-no} tests, expected $want or more" >&2
        exit 1
    fi
}
# One integration test target and a list of its tests' exact names: each
# must run.
exact() {
    local target=$1
    shift
    run "$#" --test "$target" -- --exact "$@"
}

run 1 --lib
exact executors \
    futures_block_on::ready_at_once \
    futures_block_on::inner_future_dropped_on_timeout \
    futures_block_on::inner_error_passes_through \
    futures_block_on::bad_durations_are_errors_and_the_future_is_not_polled \
    futures_block_on::zero_times_out_unless_ready_at_once \
    futures_block_on::nested_inner_fires_first \
    futures_block_on::a_past_deadline_times_out_unless_ready_at_once
exact monitoring \
    timeouts_are_counted_per_label_and_in_total reset_sets_every_counter_to_zero
run 1 --test mps_errors -- --skip megabyte
# The test clock, moved by hand (its auto-advance thread waits in real time).
run 10 --features test-util --test test_clock -- --skip auto_advance --skip stop_auto_advance
# Its own unit tests (its deadlines, and the wakers it hands timed futures).
run 3 --features test-util --lib -- test_clock::
