//! The server-side scripts: every conditional or versioned write is one atomic
//! script, loaded once and called by its SHA (and loaded again after a restart or
//! failover empties the script cache), and every script answers each record with one
//! [`Outcome`](crate::outcome::Outcome), which [`crate::outcome::decode`] reads.
//!
//! Versions are hybrid logical clock values (milliseconds << 16 | counter). Puts,
//! deletes and touches take their candidate from the client's clock, which tracks the
//! server's `TIME`, so a write's version says when it was sent, not when it ran. Every
//! script keeps a key's versions increasing: a write never stores a version at or
//! below the stored one (live or tombstone). Lua numbers are doubles, so versions are
//! handled as two 32-bit halves.
//!
//! **Fencing late commands.** A command can run long after its client gave up on it:
//! a server frozen (SIGSTOP, a long pause) with it in its socket runs it when it
//! thaws, after the shard router acknowledged later writes of the key on other
//! replicas and handed them back. Run as sent, such a write would take a version above
//! those (the stored one plus one) and put an old value over newer ones. So a write
//! whose candidate is not above the stored version reads `TIME`, and if more than the
//! command timeout (the script's `WINDOW`) has passed since its candidate, it changes
//! nothing and answers `T`. A late write whose candidate is still above the stored
//! version runs at that candidate, which is older than anything acknowledged after its
//! client gave up, so replicas and hand-backs replace it. This assumes the servers'
//! clocks and the client's estimate of them agree within the command timeout.
//!
//! **Fencing restarts.** A server can restart between two of the client's pings
//! without any command failing (the client reconnects and sends what it queued), and
//! come back empty or from an old snapshot. A conditional write decided there would
//! compare against records older than the ones acknowledged: a compare-and-swap from
//! a superseded version would win. So a conditional put or delete carries the
//! client's fence, the server's `run_id` as the client first saw it (on connecting)
//! or as the last refusal found it, and the script compares it with the server's own
//! (`INFO server`: 2.5 µs of server time a call on Redis 7.0, paid by conditional
//! writes only). If another process answers, or `INFO` is refused, the script
//! answers `B` and changes nothing. The client then reads the `run_id` again at
//! once, so a router above sees the restart (`Registry::incarnation`) on that
//! failure rather than at its next health check.

use std::time::Duration;

use fred::types::scripts::Script;

use crate::args::Write;

/// Shared prelude: parse the stored string (either layout, see [`crate::codec`]),
/// answer an outcome, store a tombstone. `parse` finds a layout-2 record `whole` if
/// its value is as long as its header says (the check, xxh3, is the client's to
/// verify: a script cannot compute it). A tombstone is written in layout 2, with an
/// empty value and the check its caller sends (bound to the key, see
/// [`crate::codec::tombstone_check`]).
const PRELUDE: &str = r#"
local function outcome(code, hi, lo)
  return code .. struct.pack('>I4I4', hi or 0, lo or 0)
end
local function parse(cur)
  if type(cur) == 'table' then return false end
  if not cur then return nil end
  local tag, layout = string.sub(cur, 1, 1), string.byte(cur, 2)
  if string.len(cur) < 18 or (tag ~= 'N' and tag ~= 'T') or (layout ~= 1 and layout ~= 2) then
    return false
  end
  local hi, lo, ehi, elo = struct.unpack('>I4I4I4I4', cur, 3)
  if hi == 4294967295 and lo == 4294967295 then return false end
  local whole = layout == 1 or (#cur >= 30 and #cur == 30 + struct.unpack('>I4', cur, 19))
  return { live = (tag == 'N'), hi = hi, lo = lo, exp = ehi * 4294967296 + elo, whole = whole }
end
-- The version and expiry as stored (bytes 2-17 of either layout).
local function stamp(hi, lo, exp)
  return struct.pack('>I4I4I4I4', hi, lo, math.floor(exp / 4294967296), exp % 4294967296)
end
local function tombstone(key, hi, lo, exp, check)
  local data = 'T' .. string.char(2) .. stamp(hi, lo, exp) .. struct.pack('>I4', 0) .. check
  if exp > 0 then
    redis.call('SET', key, data, 'PXAT', exp)
  else
    redis.call('SET', key, data)
  end
end
"#;

/// The server's clock, in ms: the one reading of `TIME`, for the scripts that need it.
const CLOCK: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// The version horizon: `far(hi, lo, now)`, whether a stored version `hi, lo` is dated
/// more than [`Version::MAX_AHEAD`](nautilus_core::Version) (`AHEAD`, set when the
/// scripts are built) after `now`, the server's clock. No write of ours makes such a
/// version: it is forged or corrupt.
const HORIZON: &str = r#"
local function far(hi, lo, now)
  return hi * 65536 + math.floor(lo / 65536) > now + AHEAD
end
"#;

/// The fence against late commands (see the module's doc): `over(hi, lo, ohi, olo)` is
/// the version a write sent with the candidate `hi, lo` takes over a stored version
/// `ohi, olo` (none: no key), the candidate if it is newer, else the next after the
/// stored one, or nothing if the write comes more than `WINDOW` ms after its candidate.
/// `WINDOW` is set when the scripts are built (see [`Scripts::new`]).
///
/// A stored version dated more than [`Version::MAX_AHEAD`](nautilus_core::Version)
/// after the server's clock is forged or corrupt (as an import carrying it would be):
/// `over` answers `false`, and the write changes nothing and answers `F`. Written past,
/// it would give the write a version from that far ahead, which the client's clock
/// then follows, and every later write of every key with it. The horizon is the
/// server's time, not the candidate's: a client whose clock a record within the
/// horizon carried ahead must not take the next forgery's horizon from there.
const FENCE: &str = r#"
local function over(hi, lo, ohi, olo)
  if not ohi or ohi < hi or (ohi == hi and olo < lo) then return hi, lo end
  local now = now_ms()
  if far(ohi, olo, now) then return false end
  if now > hi * 65536 + math.floor(lo / 65536) + WINDOW then return nil end
  olo = olo + 1
  if olo >= 4294967296 then ohi = ohi + 1; olo = 0 end
  return ohi, olo
end
local LATE = 'T' .. struct.pack('>I4I4', 0, WINDOW)
local FAR = 'F' .. string.rep('\0', 8)
"#;

/// The fence against restarts (see the module's doc): whether the server is another
/// process than the one whose `run_id` a conditional write was sent against.
const IDENTITY: &str = r#"
local function restarted(fence)
  local info = redis.pcall('INFO', 'server')
  -- INFO refused since the fence was taken: another configuration, maybe another
  -- process; refused, the client reads again, finds no run_id and drops the fence.
  if type(info) ~= 'string' then return true end
  return string.match(info, 'run_id:(%x+)') ~= fence
end
local RESTARTED = 'B' .. string.rep('\0', 8)
"#;

/// What the record-writing scripts (put, import) share: the 9-byte outcomes they
/// answer most; the one reading of a key's stored header (`GETRANGE` of its 18
/// bytes, the same in either layout): `stored(key)` returns `false` if the key holds
/// something that is not a Nautilus record, else whether a live record is there and
/// the stored version's halves (none if the key is absent); `expiry_changed(key,
/// data)`, whether the key holds the import's record with only its expiry changed
/// (see [`IMPORT_ONE`]); the record limit's check; the one write of a record's string
/// and its index entry.
const HEAD: &str = r#"
local Z8 = string.rep('\0', 8)
local DONE_NEW, DONE_OLD, UNCHANGED, CORRUPT, NO_RECORD =
  '1' .. Z8, '2' .. Z8, '0' .. Z8, 'x' .. Z8, 'n' .. Z8
local unpack, pack = struct.unpack, struct.pack
local function stored(key)
  local cur = redis.pcall('GETRANGE', key, 0, 17)
  if type(cur) == 'table' then return false end
  if cur == '' then
    if redis.call('EXISTS', key) == 1 then return false end
    return true, false, nil, nil
  end
  if #cur < 18 then return false end
  local tag, layout, hi, lo = unpack('>BBI4I4', cur)
  if (layout ~= 1 and layout ~= 2) or (tag ~= 78 and tag ~= 84) then return false end
  -- The last version of all can be followed by none: not a record we wrote.
  if hi == 4294967295 and lo == 4294967295 then return false end
  return true, tag == 78, hi, lo
end
-- Whether the record `key` holds (one `stored` found ours) is `data` (a record the
-- client built, in layout 2) at `data`'s own version with only its expiry changed:
-- one write at one version has one expiry. Moved into the past, it reads as expired,
-- not corrupt, so the client's own check after an import that changed nothing (see
-- `crate::damaged`), which finds every other damage, does not see it. Reads the whole
-- stored string: only for an import that would otherwise change nothing.
local function expiry_changed(key, data)
  local cur = redis.call('GET', key)
  return string.byte(data, 1) == 78
    and string.sub(cur, 1, 10) == string.sub(data, 1, 10)
    and string.sub(cur, 19) == string.sub(data, 19)
    and string.sub(cur, 11, 18) ~= string.sub(data, 11, 18)
end
-- Under a record limit, the 'L' outcome if one more live record would pass it
-- (the index purged of what expired by `now` first); nil if there is room.
local function full(max, index, now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  local m = tonumber(max)
  if redis.call('ZCARD', index) >= m then
    return 'L' .. pack('>I4I4', math.floor(m / 4294967296), m % 4294967296)
  end
  return nil
end
-- Stores a live record's string, expiring at `exp` as sent ('0': never), and
-- indexes it under a limit.
local function write(key, data, exp, max, index)
  if exp ~= '0' then
    redis.call('SET', key, data, 'PXAT', exp)
  else
    redis.call('SET', key, data)
  end
  if max then
    if exp ~= '0' then redis.call('ZADD', index, exp, key)
    else redis.call('ZADD', index, 'inf', key) end
  end
end
"#;

/// PUT, one record: `put(key, data, exp, cond, now, max, index)`. `data` is the stored
/// string as the client built it (header with its candidate version and expiry, then
/// the value), `exp` its expire-at ms ('0': never), `cond` the condition ('' always,
/// 'N' only if absent, or the 8 expected version bytes; either followed by the 40-byte
/// `run_id` fence, or not), `now` the client's estimate
/// of this server's clock in ms (it only purges the index). `max` is the namespace's
/// record limit (false: none) and `index` its index of live records, scored by expiry:
/// with a limit, a new record is refused once the index, purged of expired members,
/// is full.
///
/// Returns the record's outcome: '1' inserted and '2' replaced a live record, with the
/// candidate version; 'I' and 'R' the same, but the stored version (live or
/// tombstone) was not older than the candidate, so the next one after it was written
/// instead; 'c', 'n', 'x', 'L', 'T', 'F' as in the module's table.
///
/// The hot path. On Redis 7.0 a script costs about 1.5-2.4 µs before its first
/// `redis.call` and about 1-2 µs per call, so the client builds the record and the
/// script only reads the 18-byte header, compares and writes: no `TIME`, no packing
/// unless a version must be bumped.
const PUT_ONE: &str = r#"
local function put(key, data, exp, cond, now, max, index)
  if #cond > 8 then
    if restarted(string.sub(cond, -40)) then return RESTARTED end
    cond = string.sub(cond, 1, #cond - 40)
  end
  local ours, live, ohi, olo = stored(key)
  if not ours then return CORRUPT end
  if cond ~= '' then
    if cond == 'N' then
      if live then return 'c' .. pack('>I4I4', ohi, olo) end
    else
      if not live then return NO_RECORD end
      local ehi, elo = unpack('>I4I4', cond)
      if ehi ~= ohi or elo ~= olo then return 'c' .. pack('>I4I4', ohi, olo) end
    end
  end
  if max and not live then
    local refused = full(max, index, now)
    if refused then return refused end
  end
  local bumped = false
  if ohi then
    local hi, lo = unpack('>I4I4', data, 3)
    local nhi, nlo = over(hi, lo, ohi, olo)
    if nhi == false then return FAR end
    if not nhi then return LATE end
    if nhi ~= hi or nlo ~= lo then
      bumped = pack('>I4I4', nhi, nlo)
      data = string.sub(data, 1, 2) .. bumped .. string.sub(data, 11)
    end
  end
  write(key, data, exp, max, index)
  if bumped then
    if live then return 'R' .. bumped end
    return 'I' .. bumped
  end
  if live then return DONE_OLD end
  return DONE_NEW
end
"#;

/// PUT. KEYS: the record, then on a single server the namespace's meta hash (where its
/// record limit is) and its index. ARGV: data, exp, cond, now (see [`PUT_ONE`]).
/// Returns the record's outcome.
const PUT: &str = r#"
local max = false
if #KEYS == 3 then max = redis.call('HGET', KEYS[2], 'max_records') end
return put(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], max, KEYS[3])
"#;

/// DELETE. ARGV: condition (A|V), expected hi, expected lo, tombstone ms, candidate
/// hi, candidate lo, the tombstone's check hi, lo (bound to the key, see
/// [`crate::codec::tombstone_check`]), and after a 'V' the `run_id` fence, or not. Answers 'D' with the
/// delete's version, '0' (nothing live), 'c', 'n', 'x', 'T', 'F' or 'B'. A delete leaves a tombstone carrying that version for the given
/// time after it, so that a record written again right after gets a higher version
/// and an older copy is refused by IMPORT.
const DELETE: &str = r#"
if ARGV[1] == 'V' and ARGV[9] and restarted(ARGV[9]) then return RESTARTED end
local old = parse(redis.pcall('GET', KEYS[1]))
if old == false then return outcome('x') end
local live = old and old.live
if ARGV[1] == 'V' then
  if not live then return outcome('n') end
  if old.hi ~= tonumber(ARGV[2]) or old.lo ~= tonumber(ARGV[3]) then
    return outcome('c', old.hi, old.lo)
  end
end
if not live then return outcome('0') end
local hi, lo = over(tonumber(ARGV[5]), tonumber(ARGV[6]), old.hi, old.lo)
if hi == false then return FAR end
if not hi then return LATE end
local check = struct.pack('>I4I4', tonumber(ARGV[7]), tonumber(ARGV[8]))
tombstone(KEYS[1], hi, lo, hi * 65536 + math.floor(lo / 65536) + tonumber(ARGV[4]), check)
if #KEYS == 3 then redis.call('ZREM', KEYS[3], KEYS[1]) end
return outcome('D', hi, lo)
"#;

/// TOUCH. ARGV: expire-at ms ('0': never), resolved by the client on its estimate of
/// this server's clock, as a put's is; candidate hi, candidate lo. Patches the version
/// and expiry in place (bytes 2-17 of either layout), so the value, its length and its
/// check are not rewritten. Answers 'R' with the new version, '0' (no live record),
/// 'x' (also for a layout-2 record whose value is cut or grown: touched, it would
/// live on unreadable, at a version above the good copies'), 'T' or 'F'.
const TOUCH: &str = r#"
local old = parse(redis.pcall('GET', KEYS[1]))
if old == false or (old and not old.whole) then return outcome('x') end
if not (old and old.live) then return outcome('0') end
local exp = tonumber(ARGV[1])
local hi, lo = over(tonumber(ARGV[2]), tonumber(ARGV[3]), old.hi, old.lo)
if hi == false then return FAR end
if not hi then return LATE end
redis.call('SETRANGE', KEYS[1], 2, stamp(hi, lo, exp))
if exp > 0 then redis.call('PEXPIREAT', KEYS[1], exp) else redis.call('PERSIST', KEYS[1]) end
if #KEYS == 3 and redis.call('ZSCORE', KEYS[3], KEYS[1]) then
  if exp > 0 then redis.call('ZADD', KEYS[3], exp, KEYS[1])
  else redis.call('ZADD', KEYS[3], 'inf', KEYS[1]) end
end
return outcome('R', hi, lo)
"#;

/// The import of one record: `import(key, data, exp, ms, max, index)`. `data` is the
/// entry as the client built it (a record's or a tombstone's header, with its
/// version and expiry, then the value), `exp` its expire-at ms ('0': never; for a
/// tombstone, when it is collected), `ms` the server's time, `max` the namespace's
/// record limit (false: none) and `index` its index (false on Cluster). Applies only
/// if newer than what the key holds, a live record or a tombstone: like a put, it
/// reads the stored header alone. A tombstone removes the live record and stays
/// until its time; an entry already expired removes it and stores nothing. A key
/// holding what is not a record of ours (bytes another client wrote, another Redis
/// type, a header no write makes, a version past the [`HORIZON`]) holds no version:
/// the entry replaces it, so that a router's read repair and repair heal a corrupted
/// copy from a good one (puts, deletes and touches refuse such a key as corrupt).
///
/// So does the import's own record, at its version, with only its expiry changed
/// (see `expiry_changed`): moved into the past, it reads as expired, and a router
/// would take the refused import for a delete. Every other damage to a record the
/// client finds by its check, after an import that changed nothing (see
/// `crate::damaged`).
///
/// Answers '1' or '2' applied (over no live record, over one), '0' not newer, or 'L'.
const IMPORT_ONE: &str = r#"
local function import(key, data, exp, ms, max, index)
  local ours, live, ohi, olo = stored(key)
  -- A version dated past the horizon is no write of ours either.
  if ohi and far(ohi, olo, ms) then ours = false end
  if not ours then
    -- Bytes no write of ours left hold no version: the copy replaces them.
    redis.call('DEL', key)
    if index then redis.call('ZREM', index, key) end
    live, ohi, olo = false, nil, nil
  end
  local tag, hi, lo = unpack('>BxI4I4', data)
  if ohi and (ohi > hi or (ohi == hi and olo >= lo)) then
    if not expiry_changed(key, data) then return UNCHANGED end
    redis.call('DEL', key)
    if index then redis.call('ZREM', index, key) end
    live, ohi, olo = false, nil, nil
  end
  local done = live and DONE_OLD or DONE_NEW
  local exps = exp
  exp = tonumber(exp)
  if exp > 0 and exp <= ms then
    if ohi then redis.call('DEL', key) end
    if index and live then redis.call('ZREM', index, key) end
    return done
  end
  if tag == 84 then
    redis.call('SET', key, data, 'PXAT', exp)
    if index and live then redis.call('ZREM', index, key) end
    return done
  end
  if max and not live then
    local refused = full(max, index, ms)
    if refused then return refused end
  end
  write(key, data, exps, max, index)
  return done
end
"#;

/// IMPORT. KEYS: the record, then on a single server the namespace's meta hash and
/// its index. ARGV: data, exp (see [`IMPORT_ONE`]). Returns the record's outcome.
const IMPORT: &str = r#"
local max, index = false, false
if #KEYS == 3 then max, index = redis.call('HGET', KEYS[2], 'max_records'), KEYS[3] end
return import(KEYS[1], ARGV[1], ARGV[2], now_ms(), max, index)
"#;

/// WRITE_MANY (single servers): puts and imports, as many as queued together or as
/// a batch put holds. KEYS: the meta hash, the index, then the records. ARGV, per
/// record in order: 'P' and a put's four arguments (see [`PUT_ONE`]), or 'I' and an
/// import's two (see [`IMPORT`]). Returns the records' outcomes, one after the
/// other, as separate calls would answer them (a key given twice sees its first
/// write); the script's start and the limit's `HGET` are paid once for them all, and
/// the clock is read once, at the first import.
const WRITE_MANY: &str = r#"
local max = redis.call('HGET', KEYS[1], 'max_records')
local ms = nil
local out = {}
local a = 1
for i = 3, #KEYS do
  if ARGV[a] == 'P' then
    out[i - 2] = put(KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], max, KEYS[2])
    a = a + 5
  elseif ARGV[a] == 'I' then
    if not ms then ms = now_ms() end
    out[i - 2] = import(KEYS[i], ARGV[a + 1], ARGV[a + 2], ms, max, KEYS[2])
    a = a + 3
  else
    return redis.error_reply('WRITE_MANY: a record tagged neither P nor I')
  end
end
return table.concat(out)
"#;

/// INDEX. KEYS: record, index. Adds the record to the index if it is live (used to
/// rebuild the index when a limit is set; a layout-2 record whose value is cut or
/// grown is not, as `count` does not count it). Answers '1' indexed, '0' not live.
const INDEX: &str = r#"
local old = parse(redis.pcall('GET', KEYS[1]))
if not (old and old.live and old.whole) then return outcome('0') end
if old.exp > 0 then redis.call('ZADD', KEYS[2], old.exp, KEYS[1])
else redis.call('ZADD', KEYS[2], 'inf', KEYS[1]) end
return outcome('1')
"#;

/// The loaded scripts.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) put: Script,
    pub(crate) delete: Script,
    pub(crate) touch: Script,
    pub(crate) import: Script,
    /// Puts and imports of many records (see [`WRITE_MANY`]).
    pub(crate) write_many: Script,
    pub(crate) index: Script,
}

impl Scripts {
    /// The scripts of a client whose commands time out after `timeout`: its writes
    /// are fenced that long after they were sent (see the module's doc).
    pub(crate) fn new(timeout: Duration) -> Self {
        let window = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let ahead = nautilus_core::Version::MAX_AHEAD.as_millis();
        let horizon = format!("local AHEAD = {ahead}\n{HORIZON}");
        let fence = format!("{CLOCK}local WINDOW = {window}\n{horizon}{FENCE}{IDENTITY}");
        let with = |body: &str| Script::from_lua(format!("{PRELUDE}{body}"));
        let fenced = |body: &str| Script::from_lua(format!("{PRELUDE}{fence}{body}"));
        Scripts {
            put: Script::from_lua(format!("{HEAD}{fence}{PUT_ONE}{PUT}")),
            delete: fenced(DELETE),
            touch: fenced(TOUCH),
            import: Script::from_lua(format!("{HEAD}{CLOCK}{horizon}{IMPORT_ONE}{IMPORT}")),
            write_many: Script::from_lua(format!("{HEAD}{fence}{PUT_ONE}{IMPORT_ONE}{WRITE_MANY}")),
            index: with(INDEX),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 6] {
        [
            &self.put,
            &self.delete,
            &self.touch,
            &self.import,
            &self.write_many,
            &self.index,
        ]
    }

    /// The script that sends one record write of this kind.
    pub(crate) fn one(&self, kind: Write) -> &Script {
        match kind {
            Write::Put => &self.put,
            Write::Import => &self.import,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use nautilus_core::{Error, Result, Version};

    use super::*;

    /// The fence, on a real server: a write whose candidate is older than the stored
    /// version by more than the window (what a command run long after it was sent
    /// looks like) changes nothing and answers `Timeout`; the same write on time, or
    /// over an older version, goes through. Needs `NAUTILUS_REDIS_URL` (set by
    /// `cargo xtask test` and `cargo xtask redis up`).
    #[tokio::test]
    async fn a_late_write_over_a_newer_version_is_refused() {
        use nautilus_core::{DeleteOptions, Entry, Expiry, PutItem, Registry, RegistryExt};

        let Ok(url) = std::env::var("NAUTILUS_REDIS_URL") else {
            panic!("NAUTILUS_REDIS_URL is not set: run under `cargo xtask test`");
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let config = crate::RedisConfig::new(url)
            .namespace(format!("nautilus-fence-{}-{nanos}", std::process::id()))
            .command_timeout(Duration::from_millis(300));
        let registry = crate::RedisRegistry::connect(config).await.unwrap();
        // Records written now, at versions of the server's clock.
        let now = registry.inner.clock.now();
        let newer = Version::from_raw(now.as_millis() << Version::COUNTER_BITS);
        for key in ["put", "batch", "delete", "touch"] {
            assert!(
                registry
                    .import(key, Entry::new(&b"newer"[..], newer, None))
                    .await
                    .unwrap()
            );
        }
        // The client's estimate lags 10 s: its writes look sent 10 s ago.
        registry.inner.clock.shift(-10_000);
        let late = |r: Result<Version>| matches!(r, Err(Error::Timeout { after, .. }) if after == Duration::from_millis(300));
        assert!(late(registry.put("put", "late").await));
        let batch = registry
            .put_many(vec![PutItem::new("batch", &b"late"[..])])
            .await;
        assert!(late(batch.into_iter().next().unwrap()));
        let deleted = registry
            .delete_opts("delete", DeleteOptions::default())
            .await;
        assert!(matches!(deleted, Err(Error::Timeout { .. })), "{deleted:?}");
        let touched = registry
            .touch("touch", Expiry::After(Duration::from_secs(60)))
            .await;
        assert!(matches!(touched, Err(Error::Timeout { .. })), "{touched:?}");
        for key in ["put", "batch", "delete", "touch"] {
            let entry = registry.get_entry(key).await.unwrap().unwrap();
            assert_eq!(
                (&entry.value[..], entry.version, entry.expires_at),
                (&b"newer"[..], newer, None),
                "{key}"
            );
        }
        // A late write over an older version runs at its (old) candidate: anything
        // acknowledged after it was sent is newer and replaces it.
        let v = registry.put("fresh", "late but first").await.unwrap();
        assert!(v < newer);
        // On time again, a write over a newer version goes past it.
        registry.inner.clock.shift(10_000);
        assert!(registry.put("put", "on time").await.unwrap() > newer);
        assert!(
            registry
                .delete_opts("delete", DeleteOptions::default())
                .await
                .unwrap()
                .unwrap()
                > newer
        );
        assert!(
            registry
                .touch("touch", Expiry::Never)
                .await
                .unwrap()
                .unwrap()
                > newer
        );
        registry.clear().await.unwrap();
    }
}
