//! The conformance suite every backend runs (feature `testkit`).
//!
//! A backend's test file calls one macro with a factory that makes a fresh, empty
//! registry (a fresh namespace, for shared servers) and says how its time moves:
//!
//! ```no_run
//! use std::sync::Arc;
//! use nautilus_core::ManualClock;
//! use nautilus_core::testkit::{Harness, MapRegistry as MyRegistry};
//!
//! nautilus_core::conformance_suite!(|| async {
//!     let clock = ManualClock::starting_now();
//!     let registry = MyRegistry::with_clock(Arc::new(clock.clone()));
//!     Harness::with_manual_clock(Arc::new(registry), clock)
//! });
//! # fn main() {}
//! ```
//!
//! It expands to one `#[tokio::test(flavor = "multi_thread")]` per check, so the test
//! crate needs `tokio` with the `macros` and `rt-multi-thread` features among its
//! dev-dependencies. [`run_all`] runs the same
//! checks from any async context instead.
//!
//! Every check panics with a message naming what the backend got wrong.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;

use crate::Timestamp;
use crate::clock::{Clock, ManualClock};
use crate::registry::DynRegistry;

mod answered;
mod batch_answers;
mod batch_writes;
mod capacity;
pub mod checks;
mod conditions;
mod counters;
mod expiry;
mod loose_ends;
mod map;
mod model;
mod paths;
mod scans;
mod tombstones;

pub use map::MapRegistry;
pub use model::{ModelConfig, model_check};

/// Sleeps on the caller's runtime, for backends whose time is the real clock
/// (a Redis server's). Core has no runtime, so the backend's test supplies one.
#[async_trait]
pub trait Sleeper: Send + Sync {
    /// Waits for `d`.
    async fn sleep(&self, d: Duration);
}

/// How time moves for the registry under test.
#[derive(Clone)]
pub enum Time {
    /// The registry reads this clock; checks advance it instantly.
    Manual(ManualClock),
    /// The registry uses real time (a server's clock); checks sleep.
    Real(Arc<dyn Sleeper>),
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Time::Manual(c) => f.debug_tuple("Manual").field(c).finish(),
            Time::Real(_) => f.write_str("Real"),
        }
    }
}

/// A fresh registry under test and the control of its time.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The registry, empty.
    pub registry: DynRegistry,
    /// How its time moves.
    pub time: Time,
}

impl Harness {
    /// A harness for a registry on real time that sleeps with `sleeper`.
    pub fn new(registry: DynRegistry, sleeper: Arc<dyn Sleeper>) -> Self {
        Harness {
            registry,
            time: Time::Real(sleeper),
        }
    }

    /// A harness for a registry that reads `clock`.
    pub fn with_manual_clock(registry: DynRegistry, clock: ManualClock) -> Self {
        Harness {
            registry,
            time: Time::Manual(clock),
        }
    }

    /// Lets `d` pass for the registry: instantly on a manual clock, by sleeping (with
    /// a margin for server clock granularity) on real time.
    pub async fn advance(&self, d: Duration) {
        match &self.time {
            Time::Manual(clock) => clock.advance(d),
            Time::Real(sleeper) => sleeper.sleep(d + Duration::from_millis(30)).await,
        }
    }

    /// The registry's current time: its manual clock's, or on real time the system
    /// clock's (a test server on the same machine agrees with it to a few ms).
    #[must_use]
    pub fn now(&self) -> Timestamp {
        match &self.time {
            Time::Manual(clock) => clock.now(),
            Time::Real(_) => Timestamp::now(),
        }
    }

    /// Waits until `done` answers true, letting time pass between tries: on a manual
    /// clock `step` at a time, instantly; on real time by sleeping `step`, until
    /// `patience` has passed. Returns whether `done` ever answered true.
    pub async fn wait_until<F, Fut>(&self, step: Duration, patience: Duration, mut done: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let tries = (patience.as_millis() / step.as_millis().max(1)).max(1);
        for _ in 0..tries {
            if done().await {
                return true;
            }
            match &self.time {
                Time::Manual(clock) => clock.advance(step),
                Time::Real(sleeper) => sleeper.sleep(step).await,
            }
        }
        done().await
    }

    /// Whether time is under the test's control.
    #[must_use]
    pub fn manual_time(&self) -> bool {
        matches!(self.time, Time::Manual(_))
    }

    /// The time scale for TTL checks: long enough to observe a record before it
    /// expires on a real clock, irrelevant on a manual one.
    #[must_use]
    pub fn ttl_unit(&self) -> Duration {
        if self.manual_time() {
            Duration::from_secs(60)
        } else {
            Duration::from_millis(400)
        }
    }
}

/// Makes a fresh [`Harness`] per check: implemented for `Fn() -> impl Future<Output = Harness>`.
#[async_trait]
pub trait HarnessFactory: Send + Sync {
    /// A fresh, empty registry under test.
    async fn make(&self) -> Harness;
}

#[async_trait]
impl<F, Fut> HarnessFactory for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Harness> + Send,
{
    async fn make(&self) -> Harness {
        (self)().await
    }
}

/// Polls futures concurrently on the current task until all finish; results in input
/// order. (Core has no runtime; this is all the checks need to race requests.)
pub async fn join_all<T, F>(futures: Vec<F>) -> Vec<T>
where
    F: Future<Output = T>,
{
    struct JoinAll<T, F> {
        futures: Vec<Option<Pin<Box<F>>>>,
        results: Vec<Option<T>>,
    }
    impl<T, F: Future<Output = T>> Future for JoinAll<T, F> {
        type Output = Vec<T>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
            let this = Pin::into_inner(self);
            let mut pending = false;
            for (slot, result) in this.futures.iter_mut().zip(this.results.iter_mut()) {
                if let Some(fut) = slot {
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            *result = Some(v);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(this.results.iter_mut().filter_map(Option::take).collect())
            }
        }
    }
    impl<T, F> Unpin for JoinAll<T, F> {}
    let n = futures.len();
    JoinAll {
        futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        results: (0..n).map(|_| None).collect(),
    }
    .await
}

/// Runs every check against fresh registries from `factory`, in order; panics at the
/// first failure with the check's name. (Not `Send`: see [`model_check`].)
#[allow(clippy::future_not_send)]
pub async fn run_all(factory: &dyn HarnessFactory) {
    crate::__nautilus_checks!(__nautilus_run_checks!(factory));
    model_check(factory, ModelConfig::from_env()).await;
}

/// Lists the checks, handing them to `$callback` (one place to add a check).
#[doc(hidden)]
#[macro_export]
macro_rules! __nautilus_checks {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            put_then_get_returns_value_and_version,
            missing_key_is_none,
            overwrite_increases_version,
            invalid_keys_are_refused_before_anything_is_touched,
            keys_are_data_not_patterns,
            oversized_values_are_refused_and_lose_nothing,
            put_if_absent_has_one_winner,
            compare_and_swap_checks_the_version,
            put_ready_answers_as_put_opts,
            conditional_delete_checks_the_version,
            absent_delete_deletes_nothing,
            versions_keep_increasing_across_delete_and_recreate,
            zero_ttl_is_refused,
            ttl_expires_records,
            expired_records_are_not_listed_counted_or_in_the_way,
            touch_changes_expiry_without_rewriting,
            import_applies_only_newer_records,
            tombstone_deletes_refuse_older_imports_and_stay_invisible,
            imported_tombstones_remove_older_records_only,
            collected_tombstones_no_longer_refuse_imports,
            expired_imports_store_nothing,
            oversized_imports_are_refused,
            imports_from_far_ahead_are_refused,
            import_ready_answers_as_import,
            foreign_cursors_are_refused,
            byte_limits_are_enforced,
            imports_count_against_the_capacity,
            stats_count_writes_deletes_and_batch_reads,
            stats_count_each_operation_exactly,
            batches_return_one_result_per_key_in_order,
            batched_writes_keep_the_rules_of_single_writes,
            long_batches_answer_every_key_in_place,
            scan_returns_each_record_exactly_once_in_pages,
            long_scans_return_each_record_once,
            scan_is_stable_under_concurrent_writes,
            count_and_clear,
            stats_count_hits_and_misses,
            ping_answers,
            capacity_is_enforced,
            capacity_errors_name_the_limit,
            concurrent_compare_and_swap_has_exactly_one_winner,
            ready_paths_answer_as_awaited,
            conditional_deletes_and_batches_delete_as_single_deletes,
            batches_answer_each_key_as_a_single_operation,
            clear_removes_tombstones_too,
            bytes_follow_the_records_held,
            expired_records_are_not_evictions,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __nautilus_run_checks {
    (($factory:expr) $($name:ident),* $(,)?) => {$(
        $crate::testkit::checks::$name(&$factory.make().await).await;
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __nautilus_conformance_tests {
    (($factory:expr) $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let factory = $factory;
            let harness = $crate::testkit::HarnessFactory::make(&factory).await;
            $crate::testkit::checks::$name(&harness).await;
        }
    )*};
}

/// Expands to one `#[tokio::test]` per conformance check, plus the model-based
/// property test, each with fresh harnesses from `$factory` (an expression of a type
/// implementing [`HarnessFactory`], such as `|| async { .. }`).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::__nautilus_checks!(__nautilus_conformance_tests!($factory));

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn model_based_operation_sequences() {
            let factory = $factory;
            $crate::testkit::model_check(&factory, $crate::testkit::ModelConfig::from_env()).await;
        }
    };
}
