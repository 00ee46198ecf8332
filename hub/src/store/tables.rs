//! Table definitions and meta keys: the on-disk layout of `tern.redb`.
//!
//! | table | key | value | invariant |
//! | --- | --- | --- | --- |
//! | `meta` | `&str` | `u64` | `format_version`, `next_seq`, `head`, `log_bytes`, `log_count`, `journal_gen`, updated in the same transaction as the log, so start-up reads them instead of scanning |
//! | `log` | seq `u64` | postcard [`StoredMessage`](super::StoredMessage) | keys `< next_seq`; `log_bytes` = sum of value lengths, `log_count` = number of entries |
//! | `sessions` | client id | postcard [`SessionRecord`](super::SessionRecord) | |
//! | `queue` | (client id, seq) | postcard [`DeliveryInfo`](super::DeliveryInfo) | only for clients that have a session record |
//! | `inflight_out` | (client id, packet id) | postcard [`InflightOut`](super::InflightOut) | |
//! | `inflight_in` | (client id, packet id) | `()` | inbound QoS 2 awaiting PUBREL |
//! | `needed` | seq | reference count | number of `queue` + `inflight_out` entries naming the seq; its first key is the lowest seq a session still needs |
//! | `retained` | topic | postcard [`StoredMessage`](super::StoredMessage) | a copy, independent of the log |
//! | `cursors` | consumer name | seq | next seq the consumer needs |
//! | `wills` | client id | postcard [`WillRecord`](super::WillRecord) | at most one per client; present from CONNECT until the will is published or discarded, for clean and persistent sessions alike |
//! | `tx_open` | (client id, transaction id) | postcard [`TxRecord`](super::TxRecord) | one per open transaction; written with each half message, deleted with the last of them at commit or rollback |
//! | `tx_half` | (client id, transaction id, index) | postcard [`StoredMessage`](super::StoredMessage) | half messages in publish order; only for transactions in `tx_open` |

use redb::TableDefinition;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(super) const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
pub(super) const INFLIGHT_OUT: TableDefinition<(&str, u16), &[u8]> =
    TableDefinition::new("inflight_out");
pub(super) const INFLIGHT_IN: TableDefinition<(&str, u16), ()> =
    TableDefinition::new("inflight_in");
pub(super) const NEEDED: TableDefinition<u64, u64> = TableDefinition::new("needed");
pub(super) const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
pub(super) const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
pub(super) const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");
pub(super) const TX_OPEN: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tx_open");
pub(super) const TX_HALF: TableDefinition<(&str, &str, u32), &[u8]> =
    TableDefinition::new("tx_half");

/// Names of every table above, to tell a Tern store from another redb database.
pub(super) const ALL_TABLES: [&str; 12] = [
    "meta",
    "log",
    "sessions",
    "queue",
    "inflight_out",
    "inflight_in",
    "needed",
    "retained",
    "cursors",
    "wills",
    "tx_open",
    "tx_half",
];

pub(super) const KEY_FORMAT_VERSION: &str = "format_version";
pub(super) const KEY_NEXT_SEQ: &str = "next_seq";
pub(super) const KEY_HEAD: &str = "head";
pub(super) const KEY_LOG_BYTES: &str = "log_bytes";
pub(super) const KEY_LOG_COUNT: &str = "log_count";
/// Lowest journal generation whose frames may not be in the database yet (see
/// [`super::journal`]); absent means 0.
pub(super) const KEY_JOURNAL_GEN: &str = "journal_gen";
