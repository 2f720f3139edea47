//! The replicated writes: put (through a stand-in when the coordinator is down),
//! delete, touch and import, each decided by its coordinator and spread by
//! [`super`]'s machinery.

use std::time::Duration;

use nautilus_core::{
    Bytes, Condition, DeleteOptions, Entry, Error, Expiry, PutOptions, Result, Version,
};

use super::{STANDIN_LEAD, Target, targets};
use crate::refused::{Decided, Primed};
use crate::router::ShardedRegistry;
use crate::state::State;

impl ShardedRegistry {
    pub(crate) async fn put_replicated(
        &self,
        state: &State,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<Version> {
        self.redecide(key, |tie| {
            let mut options = options;
            // A tie: the condition held when the write was decided; decided again,
            // it replaces itself.
            if let Some(ours) = tie
                && !matches!(options.condition, Condition::Always)
            {
                options.condition = Condition::Version(ours);
            }
            self.put_replicated_once(state, key, value.clone(), options)
        })
        .await
    }

    async fn put_replicated_once(
        &self,
        state: &State,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<Decided<Version>> {
        let checked = !matches!(options.condition, Condition::Always);
        let (targets, c, _inflight) = self.coordinate(state, key, checked).await?;
        let node = &state.nodes[targets[c].node];
        let caught_up = checked && self.catch_up(state, key, &targets, c).await?;
        if matches!(options.condition, Condition::Absent) {
            // "Absent" must hold on every replica, not only on a coordinator that
            // came back empty.
            self.prime(state, key, &targets, c).await?;
        }
        // A TTL becomes the instant every copy expires at, on the router's clock:
        // the copies need that instant, and asking the coordinator for the one it
        // resolved would cost another round trip.
        let mut sent = options;
        if let Expiry::After(_) = options.expiry {
            sent.expiry = match options.expiry.resolve(self.inner.clock.now())? {
                Some(t) => Expiry::At(t),
                None => Expiry::Never,
            };
        }
        if targets[c].standin_for.is_some()
            && matches!(options.condition, Condition::Always)
            && let Some(version) = self
                .put_on_standin(state, key, &value, sent, &targets, c)
                .await?
        {
            return Ok(Decided::Done(version));
        }
        // A node that finds the instant already past (a TTL of a few milliseconds,
        // a node ahead of the router, a write sent again once the coordinator was
        // brought up to date) resolves the TTL on its own clock: `landed` is that
        // rule, for every write of this put, and answers with the options the write
        // landed with.
        let held = &value;
        let put_once = |sent: PutOptions, value: Bytes| async move {
            node.answer(node.registry.put_opts(key, value, sent).await)
        };
        let landed = |first: Result<Version>, sent: PutOptions| async move {
            match first {
                Err(Error::InvalidArgument { .. }) if sent != options => {
                    put_once(options, held.clone()).await.map(|v| (v, options))
                }
                first => first.map(|v| (v, sent)),
            }
        };
        let put = |sent: PutOptions| async move {
            landed(put_once(sent, held.clone()).await, sent).await
        };
        let verified = !checked || self.look_again(state, key, &targets, c, caught_up).await?;
        // An in-process coordinator writes without a boxed future.
        let first = match node.registry.put_ready(key, value.clone(), sent) {
            Ok(answer) => node.answer(answer),
            Err(value) => put_once(sent, value).await,
        };
        let mut written = landed(first, sent).await;
        if checked {
            written = self
                .again_after_restart(state, key, node, verified, written, || put(sent))
                .await?;
        }
        let (version, sent) = match written {
            Err(conflict @ Error::Conflict { actual: None, .. }) => {
                match self.prime(state, key, &targets, c).await? {
                    Primed::Imported => put(sent).await?,
                    // The coordinator holds a newer delete than the others' copy:
                    // carried to them, so reads agree with the conflict.
                    Primed::Refused(stale) => {
                        self.bury(state, key, &stale, &targets, c).await?;
                        return Err(conflict);
                    }
                    Primed::Nothing => return Err(conflict),
                }
            }
            other => other?,
        };
        let entry = match sent.expiry {
            Expiry::Never => Entry::new(value, version, None),
            Expiry::At(t) => Entry::new(value, version, Some(t)),
            // The coordinator resolved the TTL on its own clock: the copies take the
            // same instant from it (or a newer write, which is as good to spread).
            _ => match node.read_uncounted(key).await? {
                Some(e) => e,
                None => return Ok(Decided::Done(version)),
            },
        };
        self.replicate_write(state, key, &entry, &targets, c, version)
            .await
    }

    /// An unconditional write coordinated by a stand-in (every replica of the key is
    /// down), versioned on the router's clock [`STANDIN_LEAD`] ahead instead of on
    /// the stand-in's. The stand-in's clock never saw the replica's versions: in the same
    /// millisecond as the replica's last write, or a little behind its clock, it gave
    /// the write a version the replica then held as new, refused the hand-back, and
    /// the acknowledged write was lost. `None` if the stand-in holds a newer copy
    /// already (another router's): its own clock decides then.
    async fn put_on_standin(
        &self,
        state: &State,
        key: &str,
        value: &Bytes,
        sent: PutOptions,
        targets: &[Target],
        c: usize,
    ) -> Result<Option<Version>> {
        let expires_at = match sent.expiry {
            Expiry::At(t) => Some(t),
            _ => None,
        };
        self.write_ahead(state, key, targets, c, |version| {
            Entry::new(value.clone(), version, expires_at)
        })
        .await
    }

    /// `entry` made at a version on the router's clock [`STANDIN_LEAD`] ahead,
    /// imported into the coordinator `c` and spread to the other `targets`: its
    /// version, or `None` if the coordinator holds a newer copy (whose own version
    /// then stands).
    async fn write_ahead(
        &self,
        state: &State,
        key: &str,
        targets: &[Target],
        c: usize,
        entry: impl FnOnce(Version) -> Entry,
    ) -> Result<Option<Version>> {
        let ahead = self.inner.clock.now().saturating_add(STANDIN_LEAD);
        let version = self.inner.versions.next(ahead, None);
        let entry = entry(version);
        let node = &state.nodes[targets[c].node];
        if !node.answer(node.registry.import(key, entry.clone()).await)? {
            return Ok(None);
        }
        self.replicate(state, key, &entry, targets, c, version)
            .await
            .map(Some)
    }

    pub(crate) async fn delete_replicated(
        &self,
        state: &State,
        key: &str,
        options: DeleteOptions,
    ) -> Result<Option<Version>> {
        // Decided again, the delete finds the newer copy, on the coordinator or (a
        // tie with its tombstone) on the replica, which it buries.
        self.redecide(key, |_| self.delete_replicated_once(state, key, options))
            .await
    }

    async fn delete_replicated_once(
        &self,
        state: &State,
        key: &str,
        options: DeleteOptions,
    ) -> Result<Decided<Option<Version>>> {
        let (targets, c, _inflight) = self.coordinate(state, key, true).await?;
        let caught_up = self.catch_up(state, key, &targets, c).await?;
        let node = &state.nodes[targets[c].node];
        let grace = self.tombstone_grace(options.tombstone.unwrap_or_default());
        let delete = || node.registry.delete_opts(key, options.tombstone(grace));
        let verified = self.look_again(state, key, &targets, c, caught_up).await?;
        let mut deleted = node.answer(delete().await);
        deleted = self
            .again_after_restart(state, key, node, verified, deleted, delete)
            .await?;
        if matches!(
            deleted,
            Ok(None) | Err(Error::Conflict { actual: None, .. })
        ) {
            match self.prime(state, key, &targets, c).await? {
                Primed::Imported => deleted = node.answer(delete().await),
                Primed::Refused(stale) => {
                    let buried = self.bury(state, key, &stale, &targets, c).await?;
                    // Unconditional: the delete of the copy; conditional: its
                    // conflict, which reads now agree with.
                    return deleted.map(|_| Decided::Done(buried));
                }
                Primed::Nothing => {}
            }
        }
        let Some(version) = deleted? else {
            if options.condition == Condition::Always
                && (self.replica_missing(state, &targets) || self.write_in_doubt(state, &targets))
            {
                self.bury_in_doubt(state, key, &targets, c, grace).await?;
            }
            return Ok(Decided::Done(None));
        };
        let tombstone =
            Entry::tombstone(version, Some(self.inner.clock.now().saturating_add(grace)));
        self.replicate_write(state, key, &tombstone, &targets, c, Some(version))
            .await
    }

    /// Whether a replica of the key is missing from `targets` (down, stood in for or
    /// not): a write it failed may still be applied there.
    fn replica_missing(&self, state: &State, targets: &[Target]) -> bool {
        targets.iter().any(|t| t.standin_for.is_some())
            || targets.len()
                < self
                    .inner
                    .config
                    .replicas
                    .min(state.current.members().len())
    }

    /// Whether a node among `targets` failed a call so recently that a write it
    /// failed may still be held there: a node frozen for less than its checks need to
    /// mark it down runs the writes it holds when it thaws, and a delete reaching it
    /// then on another connection may run before them.
    fn write_in_doubt(&self, state: &State, targets: &[Target]) -> bool {
        let config = &self.inner.config;
        let detection = config.health.interval * config.health.failure_threshold
            + config.health.timeout
            + config.call_timeout;
        targets
            .iter()
            .any(|t| state.nodes[t.node].health.failed_within(detection * 2))
    }

    /// A delete that found nothing while a replica was down leaves a tombstone all the
    /// same ([`Self::write_ahead`]), on the nodes it reached and (through their
    /// hand-backs) on the replicas that were down. A write that failed on a replica
    /// that then froze may run when it thaws, at the version it was sent with: with
    /// nothing newer anywhere, hand-back and repair copied it to every replica, and an
    /// acknowledged delete was undone (from outside: 74 to 116 of 200 such deletes).
    /// The tombstone is newer than any write sent before the delete, so it removes
    /// that one wherever it lands; a coordinator holding a newer copy refuses it, and
    /// that later write stands above the failed one.
    async fn bury_in_doubt(
        &self,
        state: &State,
        key: &str,
        targets: &[Target],
        c: usize,
        grace: Duration,
    ) -> Result<()> {
        let until = self.inner.clock.now().saturating_add(grace);
        self.write_ahead(state, key, targets, c, |version| {
            Entry::tombstone(version, Some(until))
        })
        .await
        .map(drop)
    }

    pub(crate) async fn touch_replicated(
        &self,
        state: &State,
        key: &str,
        expiry: Expiry,
    ) -> Result<Option<Version>> {
        self.redecide(key, |_| self.touch_replicated_once(state, key, expiry))
            .await
    }

    async fn touch_replicated_once(
        &self,
        state: &State,
        key: &str,
        expiry: Expiry,
    ) -> Result<Decided<Option<Version>>> {
        let (targets, c, _inflight) = self.coordinate(state, key, true).await?;
        self.catch_up(state, key, &targets, c).await?;
        let node = &state.nodes[targets[c].node];
        let mut touched = node.answer(node.registry.touch(key, expiry).await)?;
        if touched.is_none() {
            match self.prime(state, key, &targets, c).await? {
                Primed::Imported => {
                    touched = node.answer(node.registry.touch(key, expiry).await)?;
                }
                // The coordinator's newer delete goes to the replicas that still
                // hold the record: there is nothing to touch.
                Primed::Refused(stale) => {
                    self.bury(state, key, &stale, &targets, c).await?;
                }
                Primed::Nothing => {}
            }
        }
        let Some(version) = touched else {
            return Ok(Decided::Done(None));
        };
        // The touched record as the coordinator holds it (or newer, if written since:
        // importing the newer copy is as good).
        let Some(entry) = node.read_uncounted(key).await? else {
            return Ok(Decided::Done(Some(version)));
        };
        self.replicate_write(state, key, &entry, &targets, c, Some(version))
            .await
    }

    pub(crate) async fn import_replicated(
        &self,
        state: &State,
        key: &str,
        entry: Entry,
    ) -> Result<bool> {
        let targets = targets(state, self.inner.config.replicas, key)?;
        let node = &state.nodes[targets[0].node];
        let applied = node.answer(node.registry.import(key, entry.clone()).await)?;
        // A stand-in's hand-back, the first target's too, is recorded by `spread`.
        self.replicate(state, key, &entry, &targets, 0, applied)
            .await
    }
}
