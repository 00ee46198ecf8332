//! What an operator sees of a bridge: counters and gauges the bridge task updates, read by
//! the `$SYS` publisher (`$SYS/broker/bridges/<name>/...`) and the periodic summary line.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::metrics::SysSource;
use crate::store::now_millis;

/// Live state of one bridge. Updated by its task with relaxed atomics; read anywhere.
#[derive(Debug)]
pub struct BridgeStatus {
    name: String,
    /// An upstream connection is up (CONNACK received, not lost since).
    pub connected: AtomicBool,
    /// Next log position the bridge still needs (everything before it is forwarded or not
    /// for this bridge).
    pub cursor: AtomicU64,
    /// Messages acknowledged upstream (QoS 0: written), envelopes counted by content.
    pub forwarded: AtomicU64,
    /// Upstream PUBLISH packets acknowledged (equals `forwarded` in `each` mode).
    pub publishes: AtomicU64,
    /// Connections lost or failed to be made.
    pub reconnects: AtomicU64,
    /// Messages the upstream broker refused with a negative v5 PUBACK (each one is resent
    /// after a reconnect).
    pub refused: AtomicU64,
    /// Reception time (Unix ms) of the oldest message counted and not yet forwarded; 0 if
    /// none.
    pub oldest_pending_ms: AtomicU64,
    /// Messages of this bridge counted in the log and not yet forwarded (see
    /// [`BridgeStatus::backlog`]).
    pub backlog: AtomicU64,
    /// Their bytes.
    pub backlog_bytes: AtomicU64,
    /// Messages given up unforwarded because the backlog exceeded the outbox bound.
    pub dropped: AtomicU64,
    /// Their bytes.
    pub dropped_bytes: AtomicU64,
    /// Messages (or, where the bridge had not counted them yet, log entries) the store no
    /// longer held when the bridge came to send them: trimmed by retention, or expired.
    pub trimmed: AtomicU64,
    /// The last connection or publish error.
    last_error: Mutex<Option<String>>,
    /// (time, forwarded) of the previous rate sample.
    rate_sample: Mutex<(Instant, u64)>,
}

impl BridgeStatus {
    /// A fresh status for bridge `name`, starting at `cursor`.
    pub fn new(name: &str, cursor: u64) -> Self {
        Self {
            name: name.to_owned(),
            connected: AtomicBool::new(false),
            cursor: AtomicU64::new(cursor),
            forwarded: AtomicU64::new(0),
            publishes: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            oldest_pending_ms: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            rate_sample: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records the latest error.
    pub fn set_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    /// The latest error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Messages waiting for this bridge: those it selected (its topics and routes) from the
    /// log entries it has read so far and not yet forwarded. Entries committed since its
    /// last read are not in it yet (the bridge reads as soon as a commit lands).
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Age in seconds of the oldest message read and not yet forwarded (0 if none).
    pub fn oldest_age_secs(&self) -> u64 {
        match self.oldest_pending_ms.load(Ordering::Relaxed) {
            0 => 0,
            ms => now_millis().saturating_sub(ms) / 1000,
        }
    }

    /// Messages forwarded per second since the previous call.
    fn rate(&self) -> u64 {
        let forwarded = self.forwarded.load(Ordering::Relaxed);
        let mut sample = self
            .rate_sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = sample.0.elapsed().as_secs_f64();
        let delta = forwarded.saturating_sub(sample.1);
        *sample = (Instant::now(), forwarded);
        if elapsed <= 0.0 {
            return 0;
        }
        #[expect(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "an approximate, non-negative rate"
        )]
        let rate = (delta as f64 / elapsed).round() as u64;
        rate
    }
}

impl SysSource for BridgeStatus {
    fn sys_topics(&self, out: &mut Vec<(String, String)>) {
        let base = format!("$SYS/broker/bridges/{}", self.name);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let connected = if self.connected.load(Ordering::Relaxed) {
            "1"
        } else {
            "0"
        };
        out.extend([
            (format!("{base}/connected"), connected.to_owned()),
            (format!("{base}/backlog"), self.backlog().to_string()),
            (format!("{base}/backlog_bytes"), get(&self.backlog_bytes)),
            (format!("{base}/dropped"), get(&self.dropped)),
            (format!("{base}/dropped_bytes"), get(&self.dropped_bytes)),
            (format!("{base}/trimmed"), get(&self.trimmed)),
            (
                format!("{base}/oldest_age"),
                self.oldest_age_secs().to_string(),
            ),
            (format!("{base}/forwarded"), get(&self.forwarded)),
            (format!("{base}/publishes"), get(&self.publishes)),
            (format!("{base}/rate"), self.rate().to_string()),
            (format!("{base}/reconnects"), get(&self.reconnects)),
            (format!("{base}/refused"), get(&self.refused)),
            (format!("{base}/cursor"), get(&self.cursor)),
            (
                format!("{base}/last_error"),
                self.last_error().unwrap_or_else(|| "none".to_owned()),
            ),
        ]);
    }
}
