//! The estimate of the server's clock: Redis `TIME`, read at connect and every 30 s,
//! taken halfway through the round trip. Puts take their candidate version and resolve
//! TTLs on it, so an expiry means the same instant to Redis, which enforces it, and to
//! readers of the record's header. (On Cluster: the clock of whichever primary answers.)

use std::sync::Weak;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use nautilus_core::{Result, Timestamp};

use crate::client::Client;
use crate::error::bad_reply;

/// How often the estimate is refreshed.
const CALIBRATE_EVERY: Duration = Duration::from_secs(30);

/// The server's clock as this client estimates it.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    /// The server's clock minus ours, in milliseconds.
    offset: AtomicI64,
}

impl ServerClock {
    /// Now on the server's clock, as estimated.
    pub(crate) fn now(&self) -> Timestamp {
        let local = Timestamp::now().as_millis();
        Timestamp::from_millis(local.saturating_add_signed(self.offset.load(Ordering::Relaxed)))
    }

    /// Moves the estimate by `ms` (tests: a client whose estimate lags behind the
    /// server's clock sends what looks like commands sent `-ms` ago).
    #[cfg(test)]
    pub(crate) fn shift(&self, ms: i64) {
        self.offset.fetch_add(ms, Ordering::Relaxed);
    }

    /// Reads `TIME` once and takes its answer as the server's clock halfway through
    /// the round trip.
    pub(crate) async fn calibrate(&self, client: &Client) -> Result<()> {
        let before = Timestamp::now().as_millis();
        let time = client.time().await?;
        let after = Timestamp::now().as_millis();
        let offset = offset(before, after, &time)
            .ok_or_else(|| bad_reply("TIME did not answer seconds and microseconds"))?;
        self.offset.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Recalibrates every 30 s for as long as both the clock and the client live. A
    /// failure keeps the last estimate; the next round tries again.
    pub(crate) fn keep_calibrated(clock: Weak<ServerClock>, client: Weak<Client>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CALIBRATE_EVERY).await;
                let (Some(clock), Some(client)) = (clock.upgrade(), client.upgrade()) else {
                    break;
                };
                let _ = clock.calibrate(&client).await;
            }
        });
    }
}

/// The server's clock minus ours, in ms, from `TIME`'s answer (`[seconds,
/// microseconds]`) read between our `before` and `after`. The answer is checked,
/// never trusted to fit: no overflow, no panic.
fn offset(before: u64, after: u64, time: &[String]) -> Option<i64> {
    let server = match time {
        [secs, micros] => secs
            .parse::<u64>()
            .ok()
            .zip(micros.parse::<u64>().ok())
            .and_then(|(s, us)| s.checked_mul(1000)?.checked_add(us / 1000))
            .and_then(|ms| i64::try_from(ms).ok())?,
        _ => return None,
    };
    let local = before + after.saturating_sub(before) / 2;
    Some(server.saturating_sub(i64::try_from(local).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn time(secs: &str, micros: &str) -> Vec<String> {
        vec![secs.into(), micros.into()]
    }

    #[test]
    fn the_offset_is_taken_halfway_through_the_round_trip() {
        // Server at 1000.5 s; we asked at 990 s and had the answer at 1010 s.
        assert_eq!(
            offset(990_000, 1_010_000, &time("1000", "500000")),
            Some(500)
        );
        assert_eq!(offset(5, 5, &time("0", "5000")), Some(0));
        for bad in [
            vec![],
            time("x", "1"),
            time("1", "-1"),
            vec!["1".into()],
            time("18446744073709551615", "0"),
        ] {
            assert_eq!(offset(0, 0, &bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_answer_is_read_without_panicking(
            before in any::<u64>(),
            took in any::<u64>(),
            answer in proptest::collection::vec("[0-9]{0,22}|.{0,4}", 0..4),
        ) {
            let _ = offset(before, before.saturating_add(took), &answer);
        }

        #[test]
        fn a_server_in_step_with_us_has_no_offset(ms in 0u64..1 << 50, rtt in 0u64..1000) {
            let at = ms + rtt / 2;
            let answer = time(&(at / 1000).to_string(), &((at % 1000) * 1000).to_string());
            prop_assert_eq!(offset(ms, ms + rtt, &answer), Some(0));
        }
    }
}
