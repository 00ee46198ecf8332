//! The connection's side of transactions (`docs/transactions.md`): half messages join the
//! read's batch as store ops instead of appends; commits and rollbacks are answered once
//! their outcome is durable, in order with the other acknowledgements (the connection keeps
//! reading meanwhile), and the registry is settled at that moment; the reserved `$tern/`
//! topics are refused for anything else.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::state::{Outbound, reason};
use super::{Gated, PendingAck, Session, SessionError};
use crate::message::{Message, MessageProperties};
use crate::security::acl::Operation;
use crate::store::{StoreError, Ticket, WriteOp, now_millis};
use crate::tx::{self, Claim, Classified, Ending, Outcome};

/// A commit or rollback to run once the batch before it is stored.
#[derive(Debug)]
pub(super) struct TxControl {
    /// The topic it was published to (for the ACL check of a foreign request).
    topic: String,
    tx: String,
    outcome: Outcome,
    /// `tern-tx-owner`, when given.
    owner: Option<String>,
    /// PUBACK/PUBREC to send (none at QoS 0).
    ack: Option<Outbound>,
}

/// Reason string of a refused commit or rollback.
const UNKNOWN: &str = "unknown transaction";
const FOREIGN: &str = "transaction belongs to another client";
const AMBIGUOUS: &str =
    "transaction id open under several clients; name the owner with tern-tx-owner";
const BUSY: &str = "transaction is being finished";
const RESERVED: &str = "$tern/ topics are reserved by the hub";
const STORE_FULL: &str = "store quota exceeded: transaction stays open, commit again later";

impl Session<'_> {
    /// `ack` carrying `code` (and `text` when it is a refusal); a refused QoS 2 id is
    /// released at once, as MQTT requires after a PUBREC with a failure code.
    fn tx_answer(
        &mut self,
        ack: Option<Outbound>,
        code: u8,
        text: &'static str,
    ) -> Option<Outbound> {
        match ack {
            Some(Outbound::PubAck(id, _)) if code == reason::SUCCESS => {
                Some(Outbound::PubAck(id, code))
            }
            Some(Outbound::PubAck(id, _)) => Some(Outbound::PubAckText(id, code, text)),
            Some(Outbound::PubRec(id, _)) if code == reason::SUCCESS => {
                Some(Outbound::PubRec(id, code))
            }
            Some(Outbound::PubRec(id, _)) => {
                self.conn.refuse_inbound(id);
                Some(Outbound::PubRecText(id, code, text))
            }
            other => other,
        }
    }

    /// A PUBLISH to a `$tern/` topic: a commit or rollback to run after the current batch,
    /// or a refusal (PUBACK/PUBREC 0x90) for any other reserved topic.
    pub(super) fn on_reserved_publish(
        &mut self,
        topic: String,
        properties: &MessageProperties,
        ack: Option<Outbound>,
    ) -> Option<TxControl> {
        let control = match tx::classify(&topic, properties) {
            Classified::Control { tx, outcome, owner } => {
                Some((tx.to_owned(), outcome, owner.map(str::to_owned)))
            }
            _ => None,
        };
        if let Some((tx, outcome, owner)) = control {
            return Some(TxControl {
                topic,
                tx,
                outcome,
                owner,
                ack,
            });
        }
        self.broker.metrics().transactions.refused_invalid.inc();
        debug!(topic, "publish to a reserved $tern/ topic refused");
        if let Some(packet) = self.tx_answer(ack, reason::TOPIC_NAME_INVALID, RESERVED) {
            self.batch_acks.push(PendingAck {
                packet,
                refusable: false,
            });
        }
        None
    }

    /// A half message of `tx`: stored with the batch (acknowledged once durable, like any
    /// QoS 1/2 publish) but not appended, or refused with its reason.
    pub(super) fn on_half_message(&mut self, tx: &str, message: Message, ack: Option<Outbound>) {
        let metrics = &self.broker.metrics().transactions;
        if message.qos == tern_mqtt::QoS::AtMostOnce {
            metrics.refused_qos0.inc();
            if !self.tx_qos0_logged {
                self.tx_qos0_logged = true;
                warn!(
                    tx,
                    "QoS 0 half message refused (dropped): transactions need QoS 1 or 2"
                );
            }
            return;
        }
        match self.broker.transactions().prepare(
            self.client_id,
            tx,
            &message,
            now_millis(),
            metrics,
        ) {
            Ok(op) => {
                if self.stored
                    && message.qos == tern_mqtt::QoS::ExactlyOnce
                    && let Some(Outbound::PubRec(packet_id, _)) = ack
                {
                    self.batch_ops.push(WriteOp::InflightInAdd {
                        client: self.client_id.to_string(),
                        packet_id,
                    });
                }
                self.batch_ops.push(op);
                if let Some(packet) = ack {
                    self.batch_acks.push(PendingAck {
                        packet,
                        refusable: true,
                    });
                }
            }
            Err(refusal) => {
                debug!(tx, reason = refusal.text(), "half message refused");
                if let Some(packet) = self.tx_answer(ack, refusal.code(), refusal.text()) {
                    self.batch_acks.push(PendingAck {
                        packet,
                        refusable: false,
                    });
                }
            }
        }
    }

    /// Runs a commit or rollback: stores the batch before it, waits for the half messages
    /// already submitted, ends the transaction durably and queues the answer behind every
    /// earlier acknowledgement.
    pub(super) async fn on_tx_control(
        &mut self,
        control: TxControl,
        out: &mut BytesMut,
        committed: &mut Option<watch::Receiver<Ticket>>,
    ) -> Result<(), SessionError> {
        self.flush(out, committed).await?;
        if let Some(store) = self.broker.store()
            && let Some(last) = self.gated.iter().flat_map(|g| g.tickets.iter()).max()
        {
            // A failed earlier submission ends the connection when its acks are released;
            // the commit reads whatever did commit.
            let _ = store.wait_durable(*last).await;
        }
        let metrics = &self.broker.metrics().transactions;
        let transactions = self.broker.transactions();
        let key = match transactions.claim(self.client_id, &control.tx, control.owner.as_deref()) {
            Claim::Own(key) => Ok(key),
            Claim::Foreign(key) => {
                let permitted = self
                    .acl
                    .as_mut()
                    .is_some_and(|acl| acl.check_topic(&control.topic, Operation::Write));
                if permitted && transactions.take(&key) {
                    Ok(key)
                } else if permitted {
                    metrics.refused_unknown.inc();
                    Err((reason::UNSPECIFIED_ERROR, BUSY))
                } else {
                    metrics.refused_foreign.inc();
                    warn!(
                        tx = control.tx,
                        owner = key.client,
                        "commit or rollback of another client's transaction refused"
                    );
                    Err((reason::NOT_AUTHORIZED, FOREIGN))
                }
            }
            Claim::Ambiguous => {
                metrics.refused_unknown.inc();
                debug!(
                    tx = control.tx,
                    "transaction id open under several other clients"
                );
                Err((reason::UNSPECIFIED_ERROR, AMBIGUOUS))
            }
            Claim::Unknown => {
                metrics.refused_unknown.inc();
                debug!(
                    tx = control.tx,
                    "commit or rollback of an unknown transaction"
                );
                Err((reason::UNSPECIFIED_ERROR, UNKNOWN))
            }
            Claim::Busy => {
                metrics.refused_unknown.inc();
                debug!(
                    tx = control.tx,
                    "commit or rollback of a transaction being finished"
                );
                Err((reason::UNSPECIFIED_ERROR, BUSY))
            }
        };
        let mut tickets = Vec::new();
        let mut submitted = None;
        let (code, text) = match key {
            Err(refused) => refused,
            Ok(key) => {
                let ending = Ending {
                    key,
                    outcome: control.outcome,
                };
                match tx::submit(self.broker, &ending, &mut self.scratch).await {
                    Ok(done) => {
                        tickets = done;
                        submitted = Some(ending);
                        (reason::SUCCESS, "")
                    }
                    Err(err) => {
                        tx::complete(self.broker, &ending, Err(&err));
                        match err {
                            StoreError::QuotaExceeded { .. } => {
                                (reason::QUOTA_EXCEEDED, STORE_FULL)
                            }
                            err => return Err(err.into()),
                        }
                    }
                }
            }
        };
        // Acknowledged, and settled in the registry, once the outcome is durable.
        let acks = self
            .tx_answer(control.ack, code, text)
            .into_iter()
            .collect();
        self.gated.push_back(Gated {
            tickets,
            acks,
            since: std::time::Instant::now(),
            ending: submitted,
        });
        self.release(committed, out)
    }

    /// Commits and rollbacks still waiting for their tickets when the connection ends:
    /// their registry entries are settled by a task once the tickets resolve, so a
    /// transaction is never left reserved by a connection that is gone.
    pub(super) fn settle_abandoned_endings(&mut self) {
        for gated in self.gated.drain(..) {
            let Some(ending) = gated.ending else {
                continue;
            };
            let broker = Arc::clone(self.broker);
            tokio::spawn(async move {
                let result = tx::wait_all(&broker, &gated.tickets).await;
                tx::complete(&broker, &ending, result.as_ref().map(|_| ()));
            });
        }
    }

    /// Whether `filter` may be subscribed as far as the reserved topics go: `None` when it
    /// is not a `$tern/` filter, `Some(true)` for the client's own check topic (no ACL
    /// grant needed), otherwise whether the ACL grants it.
    pub(super) fn tx_subscription(&mut self, filter: &str) -> Option<bool> {
        let topic = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, f)| f);
        if !topic.starts_with(tx::RESERVED_PREFIX) {
            return None;
        }
        if topic
            .strip_prefix(tx::CHECK_PREFIX)
            .is_some_and(|client| client == &**self.client_id)
        {
            return Some(true);
        }
        Some(
            self.acl
                .as_mut()
                .is_some_and(|acl| acl.check_subscribe(filter)),
        )
    }
}
