//! The upstream MQTT connection of one bridge: a rumqttc client (3.1.1 or 5.0) and the task
//! that drives its event loop.
//!
//! The driver task only polls: it turns rumqttc events into [`UpEvent`]s, in order, on a
//! bounded channel. After a connection error it reports [`UpEvent::Disconnected`] and then
//! waits for the bridge to answer with the delay before the next attempt: by then the
//! bridge has forgotten its in-flight state and publishes nothing until
//! [`UpEvent::Connected`]. Events rumqttc still buffers from the lost connection are
//! reported before [`UpEvent::Disconnected`], never after; before reconnecting the driver
//! discards every request still queued for the old connection, so the new connection starts
//! empty (clean session), the bridge replays from its cursor, and no stale publish or
//! acknowledgement can be matched with the replayed ones.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ClientConfig;

use super::config::{BridgeConfig, Protocol, UpstreamQos};

/// Events of the upstream connection, in the order rumqttc produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpEvent {
    /// CONNACK accepted: a new connection (clean session) is up.
    Connected,
    /// The oldest requested publish was written with this packet id (0 for QoS 0).
    Written(u16),
    /// PUBACK for this packet id; `refused` holds the v5 reason code name of a negative one.
    Acked {
        /// Packet id.
        pkid: u16,
        /// `Some(reason)` when the broker refused the message (v5 reason code ≥ 0x80).
        refused: Option<String>,
    },
    /// The DISCONNECT the bridge asked for was written.
    DisconnectSent,
    /// The connection failed or was lost (or could not be made). The driver waits for
    /// [`Upstream::resume`] before trying again.
    Disconnected(String),
}

/// One message to publish upstream.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Upstream topic.
    pub topic: String,
    /// Payload (shared, not copied, on MQTT 5).
    pub payload: Bytes,
    /// RETAIN flag.
    pub retain: bool,
    /// v5 properties (dropped on 3.1.1).
    pub properties: PublishProperties,
}

/// The client side of rumqttc, by protocol.
#[derive(Debug, Clone)]
enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Events of the driver task reach the bridge through a channel of this many entries.
const EVENT_CHANNEL: usize = 1024;

/// A bridge's upstream connection.
#[derive(Debug)]
pub struct Upstream {
    client: Client,
    qos: UpstreamQos,
    /// Driver events.
    pub events: mpsc::Receiver<UpEvent>,
    resume: mpsc::Sender<Duration>,
    driver: JoinHandle<()>,
}

/// A publish the client did not take.
#[derive(Debug, thiserror::Error)]
#[error("upstream client refused the publish: {0}")]
pub struct PublishError(String);

impl Upstream {
    /// Creates the client and spawns its driver; the first connection attempt starts at once.
    pub fn start(cfg: &BridgeConfig, tls: Option<Arc<ClientConfig>>) -> Result<Self, String> {
        let (host, port) = cfg.host_port()?;
        // Requests never exceed the window, so the channel never fills up.
        let capacity = usize::from(cfg.inflight()) + 16;
        let transport = match tls {
            Some(config) => Transport::tls_with_config(TlsConfiguration::Rustls(config)),
            None => Transport::tcp(),
        };
        let (events_tx, events) = mpsc::channel(EVENT_CHANNEL);
        let (resume, resume_rx) = mpsc::channel(1);
        let (client, driver) = match cfg.protocol {
            Protocol::V311 => {
                let mut options = rumqttc::MqttOptions::new(&cfg.client_id, host, port);
                options
                    .set_keep_alive(cfg.keep_alive.0)
                    .set_clean_session(true)
                    .set_inflight(cfg.inflight())
                    // Outgoing: up to MQTT's limit (the upstream broker enforces its own);
                    // incoming: only acknowledgements arrive.
                    .set_max_packet_size(64 * 1024, 268_435_455)
                    .set_transport(transport);
                if let Some(user) = &cfg.username {
                    options.set_credentials(user, cfg.password.clone().unwrap_or_default());
                }
                let (client, mut eventloop) = rumqttc::AsyncClient::new(options, capacity);
                eventloop.set_network_options(network_options());
                let driver = tokio::spawn(drive_v311(eventloop, events_tx, resume_rx));
                (Client::V311(client), driver)
            }
            Protocol::V5 => {
                let mut options = rumqttc::v5::MqttOptions::new(&cfg.client_id, host, port);
                options
                    .set_keep_alive(cfg.keep_alive.0)
                    .set_clean_start(true)
                    .set_outgoing_inflight_upper_limit(cfg.inflight())
                    .set_network_options(network_options())
                    .set_transport(transport);
                if let Some(user) = &cfg.username {
                    options.set_credentials(user, cfg.password.clone().unwrap_or_default());
                }
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, capacity);
                let driver = tokio::spawn(drive_v5(eventloop, events_tx, resume_rx));
                (Client::V5(client), driver)
            }
        };
        Ok(Self {
            client,
            qos: cfg.qos,
            events,
            resume,
            driver,
        })
    }

    /// Whether upstream publishes carry properties (MQTT 5).
    pub fn has_properties(&self) -> bool {
        matches!(self.client, Client::V5(_))
    }

    /// Hands one publish to the client (it is written in request order).
    pub async fn publish(&self, p: Publication) -> Result<(), PublishError> {
        let err = |e: rumqttc::ClientError| PublishError(e.to_string());
        match &self.client {
            Client::V311(c) => {
                let qos = match self.qos {
                    UpstreamQos::AtMostOnce => rumqttc::QoS::AtMostOnce,
                    UpstreamQos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                };
                c.publish_bytes(p.topic, qos, p.retain, p.payload)
                    .await
                    .map_err(err)
            }
            Client::V5(c) => {
                let qos = match self.qos {
                    UpstreamQos::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    UpstreamQos::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                };
                c.try_publish_with_properties(p.topic, qos, p.retain, p.payload, p.properties)
                    .map_err(|e| PublishError(e.to_string()))
            }
        }
    }

    /// Asks the client to send DISCONNECT; the broker then closes the connection and the
    /// driver reports [`UpEvent::Disconnected`].
    pub fn disconnect(&self) {
        // A full or closed request channel means the connection is going away anyway.
        let _ = match &self.client {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }

    /// Lets the driver try again after `delay` (answer to [`UpEvent::Disconnected`]).
    pub async fn resume(&self, delay: Duration) {
        // The driver is gone only at shutdown.
        let _ = self.resume.send(delay).await;
    }

    /// Stops the driver at once (dropping the connection).
    pub fn abort(&self) {
        self.driver.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Socket options: no Nagle delay. Publishes are small and pipelined; with Nagle each
/// write waits for the previous segment's ACK, which the peer delays, and a backlog drains
/// at a few thousand messages per second instead of at link speed.
fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options.set_connection_timeout(10);
    options
}

/// Sends `event`; false when the bridge is gone.
async fn emit(tx: &mpsc::Sender<UpEvent>, event: UpEvent) -> bool {
    tx.send(event).await.is_ok()
}

/// After an error: report it, wait for the bridge's go-ahead, drop stale requests, sleep.
/// False when the bridge is gone.
async fn pause(
    tx: &mpsc::Sender<UpEvent>,
    resume: &mut mpsc::Receiver<Duration>,
    error: String,
) -> Option<Duration> {
    if !emit(tx, UpEvent::Disconnected(error)).await {
        return None;
    }
    resume.recv().await
}

fn translate_v311(event: rumqttc::Event) -> Option<UpEvent> {
    use rumqttc::{Event, Packet};
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Some(UpEvent::Connected),
        Event::Incoming(Packet::PubAck(ack)) => Some(UpEvent::Acked {
            pkid: ack.pkid,
            refused: None,
        }),
        Event::Outgoing(Outgoing::Publish(pkid)) => Some(UpEvent::Written(pkid)),
        Event::Outgoing(Outgoing::Disconnect) => Some(UpEvent::DisconnectSent),
        _ => None,
    }
}

fn translate_v5(event: rumqttc::v5::Event) -> Option<UpEvent> {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Some(UpEvent::Connected),
        Event::Incoming(Packet::PubAck(ack)) => Some(UpEvent::Acked {
            pkid: ack.pkid,
            refused: match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                other => Some(format!("{other:?}")),
            },
        }),
        Event::Outgoing(Outgoing::Publish(pkid)) => Some(UpEvent::Written(pkid)),
        Event::Outgoing(Outgoing::Disconnect) => Some(UpEvent::DisconnectSent),
        _ => None,
    }
}

/// Drives one rumqttc event loop: `$poll` is its `poll()`, `$translate` maps its events.
///
/// After an error, the events rumqttc still buffers happened on the lost connection before
/// the error (acknowledgements read in the same batch, a publish announced before its write
/// failed): they are reported first, then [`UpEvent::Disconnected`]. Before reconnecting,
/// the requests still queued for the lost connection are discarded; nothing of it can reach
/// the next one.
macro_rules! drive {
    ($eventloop:ident, $tx:ident, $resume:ident, $translate:path) => {
        loop {
            match $eventloop.poll().await {
                Ok(event) => {
                    if let Some(event) = $translate(event)
                        && !emit(&$tx, event).await
                    {
                        return;
                    }
                }
                Err(err) => {
                    let buffered: Vec<_> = $eventloop.state.events.drain(..).collect();
                    for event in buffered.into_iter().filter_map($translate) {
                        if !emit(&$tx, event).await {
                            return;
                        }
                    }
                    let Some(delay) = pause(&$tx, &mut $resume, err.to_string()).await else {
                        return;
                    };
                    $eventloop.clean();
                    $eventloop.pending.clear();
                    $eventloop.state.events.clear();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    };
}

async fn drive_v311(
    mut eventloop: rumqttc::EventLoop,
    tx: mpsc::Sender<UpEvent>,
    mut resume: mpsc::Receiver<Duration>,
) {
    drive!(eventloop, tx, resume, translate_v311);
}

async fn drive_v5(
    mut eventloop: rumqttc::v5::EventLoop,
    tx: mpsc::Sender<UpEvent>,
    mut resume: mpsc::Receiver<Duration>,
) {
    drive!(eventloop, tx, resume, translate_v5);
}
