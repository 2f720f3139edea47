//! An import over a copy this client reads as corrupt, where the import script, which
//! computes no check, found nothing to change: a copy whose value, check, tag or
//! layout byte was changed at the import's version or above, or another key's record
//! copied under the key. The copy, if it still holds the bytes read, is dropped, and
//! the import made again (see [`RedisRegistry::import`]). This is the one place a
//! damaged copy is told from a good one on import; the script finds only what the
//! check does not cover (an expiry changed, see `crate::scripts::IMPORT_ONE`). Only
//! imports that changed nothing pay the read, and they are rare: replication, read
//! repair and repair import what a replica lacks or holds older.
use std::sync::LazyLock;

use fred::types::Value;
use fred::types::scripts::Script;
use nautilus_core::{Error, Result};

use crate::codec::live_entry;
use crate::registry::RedisRegistry;

/// DROP_IF. KEYS: the record (then, on a single server, the meta hash and the index).
/// ARGV: the bytes the client read there. Removes the record, and its index entry, if
/// it still holds exactly those bytes. Answers '1' dropped, '0' not (it changed).
const DROP_IF: &str = r#"
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' or cur ~= ARGV[1] then return '0' end
redis.call('DEL', KEYS[1])
if #KEYS == 3 then redis.call('ZREM', KEYS[3], KEYS[1]) end
return '1'
"#;

static DROP: LazyLock<Script> = LazyLock::new(|| Script::from_lua(DROP_IF));

impl RedisRegistry {
    /// Whether `key` held a copy this client reads as corrupt, now dropped.
    pub(crate) async fn drop_if_corrupt(&self, key: &str) -> Result<bool> {
        let inner = &self.inner;
        let full = inner.ns.full(key);
        let raw = inner
            .batcher
            .get(&inner.client, &inner.ns, key, full.clone())
            .await?;
        let Some(raw) = raw else {
            return Ok(false);
        };
        let corrupt = matches!(
            live_entry(
                key,
                Some(raw.clone()),
                inner.clock.now(),
                inner.ns.layout_1()
            ),
            Err(Error::Corrupt { .. })
        );
        if !corrupt {
            return Ok(false);
        }
        let keys = inner.ns.script_keys(full, inner.client.cluster());
        let answer = inner
            .client
            .eval("import", &DROP, (keys, vec![Value::Bytes(raw)]))
            .await?;
        Ok(&answer[..] == b"1")
    }
}
