//! The same behaviours of `timeout_async!` on every executor.

mod common;

use common::{cases, executors};

macro_rules! on_every_executor {
    ($($case:ident),* $(,)?) => {
        on_every_executor!(@each [$($case),*]
            tokio_current_thread tokio_current_thread_no_time tokio_multi_thread
            tokio_multi_thread_no_time smol async_std futures_block_on
            futures_thread_pool hand_rolled);
    };
    (@each $cases:tt $($exec:ident)*) => {
        $( on_every_executor!(@one $exec $cases); )*
    };
    (@one $exec:ident [$($case:ident),*]) => {
        mod $exec {
            use super::*;
            $(
                #[test]
                fn $case() {
                    executors::$exec(Box::pin(cases::$case()));
                }
            )*
        }
    };
}

on_every_executor!(
    ready_at_once,
    fires_near_its_deadline,
    finishes_in_time,
    nested_outer_fires_first,
    nested_inner_fires_first,
    inner_error_passes_through,
    inner_future_dropped_on_timeout,
    fractional_seconds,
    bad_durations_are_errors_and_the_future_is_not_polled,
    huge_durations_are_long_timeouts,
    zero_times_out_unless_ready_at_once,
    default_form_passes_results_through,
    thousands_of_concurrent_timeouts_on_one_task,
    a_deadline_fires_at_its_instant,
    a_past_deadline_times_out_unless_ready_at_once,
);

/// Long (8 s): on one executor of each kind rather than all nine.
mod staging {
    use super::*;

    #[test]
    fn tokio_current_thread() {
        executors::tokio_current_thread(Box::pin(
            cases::a_long_timeout_polls_its_future_at_its_staging_tick_and_ends_at_its_deadline(),
        ));
    }

    #[test]
    fn smol() {
        executors::smol(Box::pin(
            cases::a_long_timeout_polls_its_future_at_its_staging_tick_and_ends_at_its_deadline(),
        ));
    }

    #[test]
    fn futures_block_on() {
        executors::futures_block_on(Box::pin(
            cases::a_long_timeout_polls_its_future_at_its_staging_tick_and_ends_at_its_deadline(),
        ));
    }
}

#[cfg(feature = "test-util")]
mod test_clock {
    use super::*;

    on_every_executor!(
        test_clock_moves_timeouts_when_told,
        test_clock_auto_advances_when_every_timeout_waits,
    );
}
