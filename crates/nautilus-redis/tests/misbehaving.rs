//! A server that stops behaving like Redis, through a proxy the test switches: one
//! that answers `+OK` to everything is not a healthy ping, and a connection that went
//! dead without closing (a half-open TCP connection: a network that drops its
//! packets) is replaced, so the registry works again over a new one; a write's reply
//! altered on its way to a version past the horizon is refused, not followed.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nautilus_core::{Error, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every reply is replaced by `+OK` (the commands still reach the server).
const OK_TO_ALL: u8 = 1;

/// A write script's 9-byte outcome of a delete (`D` and the version) has a high bit of
/// its version set, as a bit flipped on the way would.
const FAR_DELETE_VERSION: u8 = 2;

/// How the test steers the proxy.
#[derive(Default)]
struct Switch {
    /// 0: replies pass through; [`OK_TO_ALL`].
    mode: AtomicU8,
    /// Connections numbered below this are dead: nothing goes through them either
    /// way, and they stay open (a half-open TCP connection).
    dead_below: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

/// Copies `from` to `to` while connection `id` is alive, each chunk as `reply`
/// rewrites it.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    switch: Arc<Switch>,
    id: u64,
    replies: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if id < switch.dead_below.load(Ordering::Relaxed) {
            continue;
        }
        let mode = if replies {
            switch.mode.load(Ordering::Relaxed)
        } else {
            0
        };
        if mode == FAR_DELETE_VERSION && buf[..n].starts_with(b"$9\r\nD") {
            buf[5] |= 0x40;
        }
        let sent = if mode == OK_TO_ALL {
            to.write_all(b"+OK\r\n").await
        } else {
            to.write_all(&buf[..n]).await
        };
        if sent.is_err() {
            break;
        }
    }
}

/// A proxy on a free loopback port in front of `upstream`, steered by `switch`.
async fn proxy(upstream: String, switch: Arc<Switch>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let id = switch.accepted.fetch_add(1, Ordering::Relaxed);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, Arc::clone(&switch), id, false));
            tokio::spawn(pipe(sr, cw, Arc::clone(&switch), id, true));
        }
    });
    format!("redis://{addr}")
}

async fn through_proxy(command_timeout: Duration) -> (RedisRegistry, Arc<Switch>) {
    let upstream = common::url("NAUTILUS_REDIS_URL");
    let upstream = upstream
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let switch = Arc::new(Switch::default());
    let url = proxy(upstream, Arc::clone(&switch)).await;
    let config = RedisConfig::new(url)
        .namespace(common::fresh_namespace())
        .pool_size(1)
        .command_timeout(command_timeout)
        .reconnect_max_delay(Duration::from_millis(100));
    (RedisRegistry::connect(config).await.unwrap(), switch)
}

#[tokio::test]
async fn a_server_that_answers_ok_to_everything_fails_its_ping() {
    let (registry, switch) = through_proxy(Duration::from_millis(200)).await;
    registry.ping().await.unwrap();
    switch.mode.store(OK_TO_ALL, Ordering::Relaxed);
    match registry.ping().await {
        Err(Error::Backend { source, .. }) => {
            assert!(source.to_string().contains("not PONG"), "{source}");
        }
        other => panic!("a ping answered OK passed as healthy: {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_that_went_dead_without_closing_is_replaced() {
    let (registry, switch) = through_proxy(Duration::from_millis(200)).await;
    registry.put("k", "v").await.unwrap();
    // Every connection open now goes dead; new ones pass.
    let open = switch.accepted.load(Ordering::Relaxed);
    switch.dead_below.store(open, Ordering::Relaxed);
    assert!(
        matches!(registry.get("k").await, Err(Error::Timeout { .. })),
        "a dead connection times out"
    );
    // A ping that times out (a router pings each interval) replaces the
    // connections, and a new one serves the calls.
    let start = Instant::now();
    loop {
        let _ = registry.ping().await;
        if let Ok(Some(v)) = registry.get("k").await {
            assert_eq!(v, "v");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the registry never left a connection that went dead ({} accepted, {open} dead)",
            switch.accepted.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switch.accepted.load(Ordering::Relaxed) > open);
}

#[tokio::test]
async fn a_dead_connection_is_replaced_when_the_caller_gives_up_on_the_ping_first() {
    // The router's health check gives up after 200 ms, long before a command timeout
    // of 2 s: a ping dropped unanswered replaces the connections too.
    let (registry, switch) = through_proxy(Duration::from_secs(2)).await;
    registry.put("k", "v").await.unwrap();
    let open = switch.accepted.load(Ordering::Relaxed);
    switch.dead_below.store(open, Ordering::Relaxed);
    let start = Instant::now();
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(200), registry.ping()).await;
        if let Ok(Ok(Some(v))) =
            tokio::time::timeout(Duration::from_millis(200), registry.get("k")).await
        {
            assert_eq!(v, "v");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "never left the dead connection ({} accepted, {open} dead)",
            switch.accepted.load(Ordering::Relaxed)
        );
    }
}

/// A delete whose reply was altered on its way to carry a version centuries ahead.
/// Before, the client's version clock followed it, and every later write of the
/// process took a version its own reads answer as corrupt (found from outside, with a
/// proxy flipping bits: one flipped reply, and a router's writes through that node
/// failed for the rest of the run). Now the reply is refused as a bad reply, and the
/// next write reads back.
#[tokio::test]
async fn a_write_reply_dated_past_the_horizon_is_refused_and_not_followed() {
    let (registry, switch) = through_proxy(Duration::from_millis(500)).await;
    registry.put("k", "v").await.unwrap();
    switch.mode.store(FAR_DELETE_VERSION, Ordering::Relaxed);
    let deleted = registry.delete("k").await;
    switch.mode.store(0, Ordering::Relaxed);
    match deleted {
        Err(Error::Backend { source, .. }) => {
            assert!(source.to_string().contains("days after"), "{source}");
        }
        other => panic!("an altered reply was taken: {other:?}"),
    }
    let version = registry.put("after", "a write after it").await.unwrap();
    assert_eq!(
        registry.get("after").await.unwrap().as_deref(),
        Some(&b"a write after it"[..])
    );
    let day_ms = 86_400_000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(version.millis() < now_ms + day_ms, "{version:?}");
    registry.clear().await.unwrap();
}
