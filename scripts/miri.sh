#!/usr/bin/env bash
# Miri over the code without libtorch: the timeout future (its pin
# projection), the shared timer, the call-site list, the breaker, the
# classifier, the duration rules. Needs the nightly toolchain with its miri
# component (added here if missing). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || true
cargo +nightly miri setup >/dev/null
# Real time, for the timer thread; Miri runs far slower than the clock, so
# tests that race the clock tolerate it (see `cfg!(miri)`).
# futures-timer's helper thread outlives every test: not a leak of ours.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-ignore-leaks}"
cargo +nightly miri test --lib
cargo +nightly miri test --test executors -- --exact \
    futures_block_on::ready_at_once \
    futures_block_on::inner_future_dropped_on_timeout \
    futures_block_on::inner_error_passes_through \
    futures_block_on::bad_durations_are_errors_and_the_future_is_not_polled \
    futures_block_on::zero_times_out_unless_ready_at_once \
    futures_block_on::nested_inner_fires_first
cargo +nightly miri test --test monitoring -- --exact \
    timeouts_are_counted_per_label_and_in_total reset_sets_every_counter_to_zero
cargo +nightly miri test --test mps_errors -- --skip megabyte
