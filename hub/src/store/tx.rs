//! Half messages of open transactions: their tables, records, writer ops and reads.
//!
//! A half message is stored in `tx_half` under (client id, transaction id, index), the
//! index counting the transaction's messages in publish order; `tx_open` holds one
//! [`TxRecord`] per open transaction. Both change only through the writer (and so through
//! the journal under [`FsyncPolicy::Interval`](super::FsyncPolicy)):
//!
//! - [`WriteOp::TxHalf`](super::WriteOp::TxHalf) stores one half message and the
//!   transaction's record;
//! - [`WriteOp::TxChecked`](super::WriteOp::TxChecked) rewrites the record of a transaction
//!   that is still open (a check request was sent) and does nothing otherwise;
//! - [`WriteOp::TxEnd`](super::WriteOp::TxEnd) deletes the transaction's half messages and
//!   record.
//!
//! A commit is one submission: `TxEnd` followed by the appends of the committed messages.
//! Appends carry their seqs, so replaying a commit's journal frame writes the same log
//! records at the same positions again: no duplicate, whatever was applied before the crash.
//! Every op here is idempotent in the same way.

use redb::{ReadableDatabase, ReadableTable, Table};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::record::{StoredMessage, UnixMillis};
use super::tables::{TX_HALF, TX_OPEN};
use super::{Store, StoreError};

/// What the store keeps about one open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// When its first half message arrived.
    pub opened_ms: UnixMillis,
    /// When its last half message arrived (check-back counts from here).
    pub last_ms: UnixMillis,
    /// Half messages stored.
    pub messages: u32,
    /// Payload and topic bytes of the half messages.
    pub bytes: u64,
    /// Check requests sent since the last half message.
    pub checks: u32,
    /// When the last check request was sent.
    pub last_check_ms: Option<UnixMillis>,
}

/// One open transaction as [`Store::open_transactions`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    /// Client that opened it.
    pub client: String,
    /// Its transaction id.
    pub tx: String,
    /// Its state.
    pub record: TxRecord,
}

/// The transaction tables, opened once per write transaction.
pub(super) struct TxTables<'txn> {
    pub(super) open: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    pub(super) half: Table<'txn, (&'static str, &'static str, u32), &'static [u8]>,
}

impl<'txn> TxTables<'txn> {
    pub(super) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            open: txn.open_table(TX_OPEN)?,
            half: txn.open_table(TX_HALF)?,
        })
    }

    /// Stores half message `index` of `(client, tx)` and the transaction's record.
    pub(super) fn half(
        &mut self,
        client: &str,
        tx: &str,
        index: u32,
        message: &[u8],
        record: &[u8],
    ) -> Result<(), redb::Error> {
        self.half.insert((client, tx, index), message)?;
        self.open.insert((client, tx), record)?;
        Ok(())
    }

    /// Rewrites the record of `(client, tx)` if the transaction is still open.
    pub(super) fn checked(
        &mut self,
        client: &str,
        tx: &str,
        record: &[u8],
    ) -> Result<(), redb::Error> {
        if self.open.get((client, tx))?.is_some() {
            self.open.insert((client, tx), record)?;
        }
        Ok(())
    }

    /// Deletes the half messages and the record of `(client, tx)`.
    pub(super) fn end(&mut self, client: &str, tx: &str) -> Result<(), redb::Error> {
        let mut indexes = Vec::new();
        for entry in self.half.range((client, tx, 0)..=(client, tx, u32::MAX))? {
            indexes.push(entry?.0.value().2);
        }
        for index in indexes {
            self.half.remove((client, tx, index))?;
        }
        self.open.remove((client, tx))?;
        Ok(())
    }
}

fn read_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::db("read transactions", e.into())
}

impl Store {
    /// The half messages of `(client, tx)` in publish order, as committed so far (wait for
    /// the tickets of their submissions first). Undecodable records are skipped, logged and
    /// counted.
    pub fn tx_messages(&self, client: &str, tx: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let common = &self.shared.common;
        let txn = common.db()?.begin_read().map_err(read_err)?;
        let half = txn.open_table(TX_HALF).map_err(read_err)?;
        let mut out = Vec::new();
        for entry in half
            .range((client, tx, 0)..=(client, tx, u32::MAX))
            .map_err(read_err)?
        {
            let (k, v) = entry.map_err(read_err)?;
            match StoredMessage::decode(v.value()) {
                Ok(message) => out.push(message),
                Err(cause) => {
                    common
                        .counters
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(client, tx, index = k.value().2, %cause, "corrupted half message skipped");
                }
            }
        }
        Ok(out)
    }

    /// Every open transaction, for the transaction manager at start-up. Undecodable records
    /// are skipped, logged and counted (their half messages stay until a later `TxEnd`).
    pub fn open_transactions(&self) -> Result<Vec<OpenTransaction>, StoreError> {
        let common = &self.shared.common;
        let txn = common.db()?.begin_read().map_err(read_err)?;
        let open = txn.open_table(TX_OPEN).map_err(read_err)?;
        let mut out = Vec::new();
        for entry in open.iter().map_err(read_err)? {
            let (k, v) = entry.map_err(read_err)?;
            let (client, tx) = k.value();
            match postcard::from_bytes::<TxRecord>(v.value()) {
                Ok(record) => out.push(OpenTransaction {
                    client: client.to_owned(),
                    tx: tx.to_owned(),
                    record,
                }),
                Err(cause) => {
                    common
                        .counters
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(client, tx, %cause, "corrupted transaction record skipped");
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use redb::ReadableDatabase;
    use tern_mqtt::QoS;

    use super::super::journal::{Generation, JournalFile};
    use super::super::tables::{KEY_JOURNAL_GEN, META};
    use super::super::tests::{commit, journal_only, rt};
    use super::super::writer::Op;
    use super::super::{Seq, StoreConfig, StoredProperties, WriteOp, now_millis};
    use super::*;

    fn message(topic: &str, payload: &str) -> StoredMessage {
        StoredMessage {
            received_ms: now_millis(),
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: StoredProperties::default(),
            publisher: "producer".to_owned(),
            expires_ms: None,
            bridge: None,
        }
    }

    fn record(messages: u32) -> TxRecord {
        TxRecord {
            opened_ms: 1_800_000_000_000,
            last_ms: 1_800_000_000_500,
            messages,
            bytes: u64::from(messages) * 10,
            checks: 0,
            last_check_ms: None,
        }
    }

    fn halves(client: &str, tx: &str, payloads: &[&str]) -> Vec<WriteOp> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| WriteOp::TxHalf {
                client: client.to_owned(),
                tx: tx.to_owned(),
                index: u32::try_from(i).expect("small"),
                message: message("orders", p),
                record: record(u32::try_from(i + 1).expect("small")),
            })
            .collect()
    }

    fn log(store: &Store) -> Vec<(Seq, String)> {
        let mut out = Vec::new();
        store.read_log(0, usize::MAX, &mut out).expect("read");
        out.into_iter()
            .map(|(seq, m)| (seq, String::from_utf8_lossy(&m.payload).into_owned()))
            .collect()
    }

    /// The commit submission: delete the half messages, append them in order.
    fn commit_ops(store: &Store, client: &str, tx: &str) -> Vec<WriteOp> {
        let mut ops = vec![WriteOp::TxEnd {
            client: client.to_owned(),
            tx: tx.to_owned(),
        }];
        ops.extend(
            store
                .tx_messages(client, tx)
                .expect("read")
                .into_iter()
                .map(WriteOp::Append),
        );
        ops
    }

    #[test]
    fn half_messages_stay_out_of_the_log_until_commit_moves_them_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let (store, _) = Store::open(dir.path(), StoreConfig::default()).expect("open");
        commit(&rt, &store, halves("c1", "t1", &["a", "b", "c"]));
        commit(&rt, &store, halves("c1", "t2", &["x"]));
        commit(&rt, &store, halves("c2", "t1", &["other"]));
        assert!(log(&store).is_empty(), "half messages are not in the log");
        let payloads: Vec<_> = store
            .tx_messages("c1", "t1")
            .expect("read")
            .into_iter()
            .map(|m| m.payload)
            .collect();
        assert_eq!(payloads, [&b"a"[..], b"b", b"c"].map(Bytes::from_static));
        let mut open = store.open_transactions().expect("open list");
        open.sort_by(|a, b| (&a.client, &a.tx).cmp(&(&b.client, &b.tx)));
        let keys: Vec<_> = open
            .iter()
            .map(|o| (o.client.as_str(), o.tx.as_str()))
            .collect();
        assert_eq!(keys, [("c1", "t1"), ("c1", "t2"), ("c2", "t1")]);
        assert_eq!(open[0].record, record(3));

        let seqs = commit(&rt, &store, commit_ops(&store, "c1", "t1"));
        assert_eq!(seqs.len(), 3);
        let expected: Vec<_> = seqs
            .iter()
            .copied()
            .zip(["a", "b", "c"].map(String::from))
            .collect();
        assert_eq!(log(&store), expected);
        assert!(store.tx_messages("c1", "t1").expect("read").is_empty());
        // Rollback: the other transactions' records go, nothing reaches the log.
        commit(
            &rt,
            &store,
            vec![WriteOp::TxEnd {
                client: "c1".into(),
                tx: "t2".into(),
            }],
        );
        let open = store.open_transactions().expect("open list");
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].client.as_str(), open[0].tx.as_str()), ("c2", "t1"));
        assert_eq!(log(&store), expected);
    }

    #[test]
    fn check_record_of_a_finished_transaction_is_not_resurrected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let (store, _) = Store::open(dir.path(), StoreConfig::default()).expect("open");
        commit(&rt, &store, halves("c1", "t1", &["a"]));
        let mut checked = record(1);
        checked.checks = 2;
        checked.last_check_ms = Some(1_800_000_001_000);
        let check = WriteOp::TxChecked {
            client: "c1".into(),
            tx: "t1".into(),
            record: checked,
        };
        commit(&rt, &store, vec![check.clone()]);
        assert_eq!(store.open_transactions().expect("list")[0].record, checked);
        commit(
            &rt,
            &store,
            vec![WriteOp::TxEnd {
                client: "c1".into(),
                tx: "t1".into(),
            }],
        );
        commit(&rt, &store, vec![check]);
        assert!(store.open_transactions().expect("list").is_empty());
    }

    /// Open transactions survive a crash under the journal: a crash image of a running
    /// store (no checkpoint since the prepares) still has them, and a commit applied to it
    /// moves them into the log once.
    #[test]
    fn prepares_survive_a_crash_image_under_the_journal() {
        let live = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let (store, _) = Store::open(live.path(), journal_only()).expect("open");
        commit(&rt, &store, halves("c1", "t1", &["a", "b"]));
        let image = tempfile::tempdir().expect("tempdir");
        copy_dir(live.path(), image.path());
        drop(store);
        let (store, _) = Store::open(image.path(), journal_only()).expect("reopen");
        assert_eq!(store.open_transactions().expect("list").len(), 1);
        let seqs = commit(&rt, &store, commit_ops(&store, "c1", "t1"));
        assert_eq!(
            log(&store),
            seqs.into_iter()
                .zip(["a".to_owned(), "b".to_owned()])
                .collect::<Vec<_>>()
        );
    }

    /// A commit's journal frame applied on top of a database that already holds the commit
    /// (the crash came after redb had made it durable, before the checkpoint deleted the
    /// journal) changes nothing: the same records at the same seqs, exact counters.
    #[test]
    fn replaying_a_commit_twice_does_not_duplicate_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let (store, _) = Store::open(dir.path(), journal_only()).expect("open");
        let prepare = halves("c1", "t1", &["a", "b", "c"]);
        commit(&rt, &store, prepare.clone());
        let commit_submission = commit_ops(&store, "c1", "t1");
        let seqs = commit(&rt, &store, commit_submission.clone());
        let expected = log(&store);
        let stats = store.stats();
        store.close().expect("close");
        drop(store);

        // Write the prepare and commit frames again as the journal of the current generation.
        let generation = {
            let db = redb::Database::open(dir.path().join(super::super::FILE_NAME)).expect("db");
            let txn = db.begin_read().expect("read");
            let meta = txn.open_table(META).expect("meta");
            meta.get(KEY_JOURNAL_GEN)
                .expect("get")
                .map_or(0, |v| v.value())
        };
        let encode = |ops: Vec<WriteOp>| -> Vec<Op> {
            let mut appended = seqs.iter();
            ops.into_iter()
                .map(|op| {
                    let mut op = Op::encode(op).expect("encode");
                    if let Op::Append { seq, .. } = &mut op {
                        *seq = *appended.next().expect("seq");
                    }
                    op
                })
                .collect()
        };
        let mut file = JournalFile::create(dir.path(), Generation(generation)).expect("journal");
        for group in [encode(prepare), encode(commit_submission)] {
            file.append(group.iter()).expect("append");
        }
        drop(file);

        let (store, _) = Store::open(dir.path(), journal_only()).expect("reopen");
        assert_eq!(log(&store), expected);
        assert_eq!(store.stats().records, stats.records);
        assert_eq!(store.stats().bytes, stats.bytes);
        assert!(store.open_transactions().expect("list").is_empty());
        assert!(store.tx_messages("c1", "t1").expect("read").is_empty());
    }

    /// A format-3 store (before transactions) opens, gains the tables and is recorded as
    /// format 4.
    #[test]
    fn format_3_store_gains_the_transaction_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db =
                redb::Database::create(dir.path().join(super::super::FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert(super::super::tables::KEY_FORMAT_VERSION, 3)
                .expect("insert");
            txn.open_table(super::super::tables::LOG).expect("log");
            txn.commit().expect("commit");
        }
        let rt = rt();
        let (store, _) = Store::open(dir.path(), StoreConfig::default()).expect("open");
        commit(&rt, &store, halves("c1", "t1", &["a"]));
        assert_eq!(store.open_transactions().expect("list").len(), 1);
        store.close().expect("close");
        drop(store);
        let db = redb::Database::open(dir.path().join(super::super::FILE_NAME)).expect("db");
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        let version = meta
            .get(super::super::tables::KEY_FORMAT_VERSION)
            .expect("get")
            .map(|v| v.value());
        assert_eq!(version, Some(super::super::FORMAT_VERSION));
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}
