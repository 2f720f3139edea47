//! A model-based property test: random operation sequences run against the backend
//! and against a plain map, compared after every step; failures shrink to a minimal
//! sequence.

#![allow(clippy::panic)] // a failed property is reported by panicking

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::{Harness, HarnessFactory};
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{Condition, DeleteOptions, Entry, Expiry, PutOptions, Timestamp, Version};

const KEYS: &[&str] = &["a", "a*", "ab", "b", "user[1]", "c"];

/// How many sequences to run, and from which seed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ModelConfig {
    /// Random sequences to try.
    pub cases: u32,
    /// Longest sequence.
    pub max_ops: usize,
    /// Seed of the generator: the same seed gives the same sequences.
    pub seed: u64,
}

impl ModelConfig {
    /// 64 cases of up to 40 operations, or `NAUTILUS_MODEL_CASES` /
    /// `NAUTILUS_MODEL_SEED` from the environment.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
        ModelConfig {
            cases: var("NAUTILUS_MODEL_CASES").map_or(64, |n: u64| n as u32),
            max_ops: 40,
            seed: var("NAUTILUS_MODEL_SEED").unwrap_or(0x6e61_7574_696c_7573),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        val: u8,
        ttl: Option<u64>,
    },
    PutIfAbsent {
        key: usize,
        val: u8,
    },
    Cas {
        key: usize,
        val: u8,
        stale: bool,
    },
    Delete {
        key: usize,
    },
    DeleteIfVersion {
        key: usize,
        stale: bool,
    },
    Touch {
        key: usize,
        ttl: Option<u64>,
    },
    Import {
        key: usize,
        val: u8,
        newer: bool,
    },
    Get {
        key: usize,
    },
    GetMany,
    Scan {
        prefix: usize,
        page: usize,
    },
    Count,
    Advance {
        ms: u64,
    },
}

fn op_strategy(manual_time: bool) -> BoxedStrategy<Op> {
    let key = 0..KEYS.len();
    // On a real clock, TTLs are long enough never to expire during a case.
    let ttl = if manual_time {
        prop::option::of(1u64..3_000).boxed()
    } else {
        prop::option::of(Just(3_600_000u64)).boxed()
    };
    let mut ops = vec![
        (key.clone(), any::<u8>(), ttl.clone())
            .prop_map(|(key, val, ttl)| Op::Put { key, val, ttl })
            .boxed(),
        (key.clone(), any::<u8>())
            .prop_map(|(key, val)| Op::PutIfAbsent { key, val })
            .boxed(),
        (key.clone(), any::<u8>(), any::<bool>())
            .prop_map(|(key, val, stale)| Op::Cas { key, val, stale })
            .boxed(),
        key.clone().prop_map(|key| Op::Delete { key }).boxed(),
        (key.clone(), any::<bool>())
            .prop_map(|(key, stale)| Op::DeleteIfVersion { key, stale })
            .boxed(),
        (key.clone(), ttl)
            .prop_map(|(key, ttl)| Op::Touch { key, ttl })
            .boxed(),
        (key.clone(), any::<u8>(), any::<bool>())
            .prop_map(|(key, val, newer)| Op::Import { key, val, newer })
            .boxed(),
        key.prop_map(|key| Op::Get { key }).boxed(),
        Just(Op::GetMany).boxed(),
        (0..=KEYS.len(), 1usize..4)
            .prop_map(|(prefix, page)| Op::Scan { prefix, page })
            .boxed(),
        Just(Op::Count).boxed(),
    ];
    if manual_time {
        ops.push((1u64..2_000).prop_map(|ms| Op::Advance { ms }).boxed());
    }
    prop::strategy::Union::new(ops).boxed()
}

/// The model: what a correct registry holds.
#[derive(Default)]
struct Model {
    records: BTreeMap<String, (u8, Version, Option<u64>)>,
    /// The highest version each key ever had, live or not.
    high: BTreeMap<String, Version>,
}

impl Model {
    fn live(&self, key: &str, now: u64) -> Option<(u8, Version, Option<u64>)> {
        self.records
            .get(key)
            .copied()
            .filter(|(_, _, exp)| exp.is_none_or(|e| e > now))
    }
}

fn now_ms(h: &Harness) -> u64 {
    match &h.time {
        super::Time::Manual(c) => crate::clock::Clock::now(c).as_millis(),
        super::Time::Real(_) => Timestamp::now().as_millis(),
    }
}

/// Runs one sequence; returns a description of the first divergence.
async fn run_case(h: &Harness, ops: &[Op]) -> Result<(), String> {
    let r = &h.registry;
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let now = now_ms(h);
        let fail = |what: String| Err(format!("step {step} ({op:?}): {what}"));
        let bump = |m: &mut Model, key: &str, version: Version| -> Result<(), String> {
            if let Some(high) = m.high.get(key)
                && version <= *high
            {
                return Err(format!("version {version} not above earlier {high}"));
            }
            m.high.insert(key.to_owned(), version);
            Ok(())
        };
        match *op {
            Op::Put { key, val, ttl } => {
                let k = KEYS[key];
                let mut opts = PutOptions::default();
                if let Some(ms) = ttl {
                    opts = opts.ttl(Duration::from_millis(ms));
                }
                match r.put_opts(k, Bytes::from(vec![val]), opts).await {
                    Ok(version) => {
                        if let Err(e) = bump(&mut m, k, version) {
                            return fail(e);
                        }
                        m.records
                            .insert(k.to_owned(), (val, version, ttl.map(|t| now + t)));
                    }
                    Err(e) => return fail(format!("put failed: {e}")),
                }
            }
            Op::PutIfAbsent { key, val } => {
                let k = KEYS[key];
                let live = m.live(k, now);
                match (r.put_if_absent(k, vec![val], Expiry::Never).await, live) {
                    (Ok(version), None) => {
                        if let Err(e) = bump(&mut m, k, version) {
                            return fail(e);
                        }
                        m.records.insert(k.to_owned(), (val, version, None));
                    }
                    (Err(Error::Conflict { actual, .. }), Some((_, v, _))) if actual == Some(v) => {
                    }
                    (got, live) => return fail(format!("got {got:?}, model holds {live:?}")),
                }
            }
            Op::Cas { key, val, stale } => {
                let k = KEYS[key];
                let live = m.live(k, now);
                let expected = match (live, stale) {
                    (Some((_, v, _)), false) => v,
                    (Some((_, v, _)), true) => Version::from_raw(v.as_raw() - 1),
                    (None, _) => Version::from_raw(1),
                };
                let got = r
                    .compare_and_swap(k, expected, vec![val], Expiry::Never)
                    .await;
                match (got, live) {
                    (Ok(version), Some((_, v, _))) if v == expected => {
                        if let Err(e) = bump(&mut m, k, version) {
                            return fail(e);
                        }
                        m.records.insert(k.to_owned(), (val, version, None));
                    }
                    (Err(Error::Conflict { actual, .. }), live)
                        if actual == live.map(|l| l.1) && live.map(|l| l.1) != Some(expected) => {}
                    (got, live) => return fail(format!("got {got:?}, model holds {live:?}")),
                }
            }
            Op::Delete { key } => {
                let k = KEYS[key];
                let live = m.live(k, now).is_some();
                match r.delete_opts(k, DeleteOptions::default()).await {
                    Ok(removed) if removed.is_some() == live => {
                        m.records.remove(k);
                        // A backend may keep the delete's version as a tombstone.
                        if let Some(v) = removed {
                            m.high.insert(k.to_owned(), v);
                        }
                    }
                    got => return fail(format!("got {got:?}, model live: {live}")),
                }
            }
            Op::DeleteIfVersion { key, stale } => {
                let k = KEYS[key];
                let live = m.live(k, now);
                let expected = match (live, stale) {
                    (Some((_, v, _)), false) => v,
                    (Some((_, v, _)), true) => Version::from_raw(v.as_raw() + 1),
                    (None, _) => Version::from_raw(7),
                };
                let opts = DeleteOptions::default().condition(Condition::Version(expected));
                match (r.delete_opts(k, opts).await, live) {
                    (Ok(Some(deleted)), Some((_, v, _))) if v == expected && deleted > v => {
                        m.records.remove(k);
                        m.high.insert(k.to_owned(), deleted);
                    }
                    (Err(Error::Conflict { actual, .. }), live)
                        if actual == live.map(|l| l.1) && actual != Some(expected) => {}
                    (got, live) => return fail(format!("got {got:?}, model holds {live:?}")),
                }
            }
            Op::Touch { key, ttl } => {
                let k = KEYS[key];
                let expiry = ttl.map_or(Expiry::Never, |t| Expiry::After(Duration::from_millis(t)));
                match (r.touch(k, expiry).await, m.live(k, now)) {
                    (Ok(None), None) => {}
                    (Ok(Some(version)), Some((val, _, _))) => {
                        if let Err(e) = bump(&mut m, k, version) {
                            return fail(e);
                        }
                        m.records
                            .insert(k.to_owned(), (val, version, ttl.map(|t| now + t)));
                    }
                    (got, live) => return fail(format!("got {got:?}, model holds {live:?}")),
                }
            }
            Op::Import { key, val, newer } => {
                let k = KEYS[key];
                let live = m.live(k, now);
                let version = match (live, newer) {
                    (Some((_, v, _)), true) => Version::from_raw(v.as_raw() + 1_000),
                    (Some((_, v, _)), false) => Version::from_raw(v.as_raw() - 1),
                    (None, _) => {
                        let high = m.high.get(k).map_or(0, |v| v.as_raw());
                        Version::from_raw(high + 500)
                    }
                };
                let should_apply = live.is_none() || newer;
                let entry = Entry::new(vec![val], version, None);
                match r.import(k, entry).await {
                    Ok(applied) if applied == should_apply => {
                        if applied {
                            m.high
                                .entry(k.to_owned())
                                .and_modify(|h| *h = (*h).max(version))
                                .or_insert(version);
                            m.records.insert(k.to_owned(), (val, version, None));
                        }
                    }
                    got => return fail(format!("got {got:?}, expected applied={should_apply}")),
                }
            }
            Op::Get { key } => {
                let k = KEYS[key];
                let want = m.live(k, now);
                // On a real clock the server resolves TTLs on its own clock: the model
                // knows the expiry only to within the time a request takes.
                let slack = if h.manual_time() { 0 } else { 2_000 };
                let expiry_ok = |got: Option<Timestamp>, want: Option<u64>| match (got, want) {
                    (None, None) => true,
                    (Some(g), Some(w)) => g.as_millis().abs_diff(w) <= slack,
                    _ => false,
                };
                match r.get_entry(k).await {
                    Ok(got)
                        if got.as_ref().map(|e| (e.value.to_vec(), e.version))
                            == want.map(|(v, ver, _)| (vec![v], ver))
                            && expiry_ok(
                                got.as_ref().and_then(|e| e.expires_at),
                                want.and_then(|w| w.2),
                            ) => {}
                    got => return fail(format!("got {got:?}, model holds {want:?}")),
                }
            }
            Op::GetMany => {
                let got = r.get_many(KEYS).await;
                for (k, res) in KEYS.iter().zip(got) {
                    let want = m.live(k, now).map(|(v, ver, _)| (vec![v], ver));
                    let have = match res {
                        Ok(e) => e.map(|e| (e.value.to_vec(), e.version)),
                        Err(e) => return fail(format!("get_many {k}: {e}")),
                    };
                    if have != want {
                        return fail(format!("get_many {k}: got {have:?}, model {want:?}"));
                    }
                }
            }
            Op::Scan { prefix, page } => {
                let p = KEYS.get(prefix).copied().unwrap_or("");
                let mut found = BTreeMap::new();
                let mut cursor = None;
                for _ in 0..100_000 {
                    let res = match r.scan(p, cursor.as_ref(), page).await {
                        Ok(res) => res,
                        Err(e) => return fail(format!("scan: {e}")),
                    };
                    for (k, e) in res.records {
                        if found.insert(k.clone(), e.value.to_vec()).is_some() {
                            return fail(format!("scan returned {k} twice"));
                        }
                    }
                    cursor = res.next;
                    if cursor.is_none() {
                        break;
                    }
                }
                let want: BTreeMap<_, _> = KEYS
                    .iter()
                    .filter(|k| k.starts_with(p))
                    .filter_map(|k| m.live(k, now).map(|(v, _, _)| ((*k).to_owned(), vec![v])))
                    .collect();
                if found != want {
                    return fail(format!("scan {p:?}: got {found:?}, model {want:?}"));
                }
            }
            Op::Count => {
                let want = KEYS.iter().filter(|k| m.live(k, now).is_some()).count() as u64;
                match r.count().await {
                    Ok(n) if n == want => {}
                    got => return fail(format!("count: got {got:?}, model {want}")),
                }
            }
            Op::Advance { ms } => h.advance(Duration::from_millis(ms)).await,
        }
    }
    Ok(())
}

/// Runs random operation sequences against fresh registries from `factory` and a
/// model; on a divergence, shrinks the sequence and panics with the smallest one found.
// proptest's value trees are not `Send`; the check runs on the test's own task
// (`block_on`), which does not need it to be.
#[allow(clippy::future_not_send)]
pub async fn model_check(factory: &dyn HarnessFactory, config: ModelConfig) {
    let probe = factory.make().await;
    let manual = probe.manual_time();
    drop(probe);
    let strategy = prop::collection::vec(op_strategy(manual), 1..config.max_ops);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&config.seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    for case in 0..config.cases {
        let mut tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            Err(e) => panic!("could not generate a case: {e}"),
        };
        let first = tree.current();
        let Err(first_failure) = run_case(&factory.make().await, &first).await else {
            continue;
        };
        // Shrink: simplify while it still fails, step back when it passes.
        let mut smallest = (first, first_failure);
        for _ in 0..512 {
            if !tree.simplify() {
                break;
            }
            loop {
                let candidate = tree.current();
                match run_case(&factory.make().await, &candidate).await {
                    Err(why) => {
                        smallest = (candidate, why);
                        break;
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        let mut listing = String::new();
        for (i, op) in smallest.0.iter().enumerate() {
            let _ = writeln!(listing, "  {i}: {op:?}");
        }
        panic!(
            "model check failed in case {case} (seed {:#x}): {}\nminimal sequence:\n{listing}",
            config.seed, smallest.1
        );
    }
}
