//! `[transactions]`: check-back timing, the policy for unresolved transactions, and limits.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ByteSize, HumanDuration};

/// What the hub does with a transaction its producer never resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unresolved {
    /// Delete its half messages: nothing becomes visible.
    #[default]
    Rollback,
    /// Commit it as if the producer had.
    Commit,
}

impl Unresolved {
    /// The name used in configuration, counters and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rollback => "rollback",
            Self::Commit => "commit",
        }
    }
}

/// `[transactions]` (see `docs/transactions.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TxConfig {
    /// Whether PUBLISHes with the `tern-tx` user property are half messages. When off they
    /// are refused (PUBACK/PUBREC 0x83). Default true.
    pub enabled: bool,
    /// First check request this long after a transaction's last half message. Default 30 s.
    pub check_after: HumanDuration,
    /// Further check requests this far apart. Default 30 s.
    pub check_interval: HumanDuration,
    /// Unanswered check requests before `on_unresolved` applies. Default 5.
    pub max_checks: u32,
    /// Policy for transactions nobody resolves. Default `rollback`.
    pub on_unresolved: Unresolved,
    /// Open transactions per client; a half message opening one more gets 0x97. Default 16.
    pub max_open_per_client: usize,
    /// Half messages per transaction. Default 10 000.
    pub max_messages: u32,
    /// Topic and payload bytes per transaction. Default 16 MiB.
    pub max_bytes: ByteSize,
    /// Transactions open longer than this get `on_unresolved`, checks or not. Default 24 h.
    pub max_age: HumanDuration,
}

impl Default for TxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            check_after: HumanDuration(Duration::from_secs(30)),
            check_interval: HumanDuration(Duration::from_secs(30)),
            max_checks: 5,
            on_unresolved: Unresolved::Rollback,
            max_open_per_client: 16,
            max_messages: 10_000,
            max_bytes: ByteSize(16 << 20),
            max_age: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

impl TxConfig {
    /// Checks the values; the error names the key and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("transactions.check_after", self.check_after.0),
            ("transactions.check_interval", self.check_interval.0),
            ("transactions.max_age", self.max_age.0),
        ];
        for (key, value) in positive {
            if value < Duration::from_millis(10) {
                return Err((key, "must be at least 10ms".into()));
            }
        }
        if self.max_open_per_client == 0 {
            return Err((
                "transactions.max_open_per_client",
                "must be at least 1".into(),
            ));
        }
        if self.max_messages == 0 {
            return Err(("transactions.max_messages", "must be at least 1".into()));
        }
        if self.max_bytes.0 == 0 {
            return Err(("transactions.max_bytes", "must be greater than zero".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_limits_name_their_key() {
        assert_eq!(TxConfig::default().validate(), Ok(()));
        let config = TxConfig {
            max_open_per_client: 0,
            ..TxConfig::default()
        };
        assert_eq!(
            config.validate().map_err(|(key, _)| key),
            Err("transactions.max_open_per_client")
        );
        let config = TxConfig {
            check_after: HumanDuration(Duration::ZERO),
            ..TxConfig::default()
        };
        assert_eq!(
            config.validate().map_err(|(key, _)| key),
            Err("transactions.check_after")
        );
    }
}
