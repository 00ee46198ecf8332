//! The cloud side of the bridge tests: an MQTT 5 consumer on mosquitto with a persistent
//! session, subscribed to `#` at QoS 1, that reconnects by itself while mosquitto restarts
//! (so messages a bridge delivers meanwhile wait for it in mosquitto).
//!
//! Like any QoS 1 consumer it may see a message twice: when mosquitto stops before this
//! client's PUBACK left, the resumed session redelivers the message with DUP set. Such a
//! redelivery of a message already received is set aside (and counted), so the tests see
//! what the bridge sent, once per time it sent it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use super::RECV_TIMEOUT;

/// One message as the cloud consumer received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Got {
    pub topic: String,
    pub payload: Vec<u8>,
    pub user: Vec<(String, String)>,
    pub content_type: Option<String>,
}

impl Got {
    /// The payload as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The first user property `key`.
    pub fn prop(&self, key: &str) -> Option<&str> {
        self.user
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The consumer; its event loop task ends when it is dropped.
pub struct Cloud {
    rx: mpsc::UnboundedReceiver<Got>,
    /// Redeliveries (DUP) of messages already received, set aside.
    redelivered: Arc<AtomicUsize>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    /// Connects as `id` to the mosquitto on loopback `port`; returns once subscribed.
    pub async fn connect(port: u16, id: &str) -> Cloud {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(3600))
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(16 << 20));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (suback_tx, mut suback_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let redelivered = Arc::new(AtomicUsize::new(0));
        let redeliveries = Arc::clone(&redelivered);
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let props = p.properties.unwrap_or_default();
                        let got = Got {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            user: props.user_properties,
                            content_type: props.content_type,
                        };
                        if !seen.insert(got.clone()) && p.dup {
                            redeliveries.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let _ = tx.send(got);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(_) => {}
                    // mosquitto is restarting: poll again (reconnects, session resumes).
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
            .subscribe_many([Filter::new("#", QoS::AtLeastOnce)])
            .await
            .expect("subscribe");
        tokio::time::timeout(RECV_TIMEOUT, suback_rx.recv())
            .await
            .expect("SUBACK from mosquitto in time")
            .expect("cloud consumer running");
        Cloud {
            rx,
            redelivered,
            _client: client,
            task,
        }
    }

    /// How many redeliveries of messages already received were set aside so far.
    pub fn redelivered(&self) -> usize {
        self.redelivered.load(Ordering::Relaxed)
    }

    /// Receives until `done` says the collection is complete, or fails after `timeout`.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Got]) -> bool,
    ) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(g)) => got.push(g),
                _ => panic!(
                    "cloud got {} messages before the deadline; last: {:?}",
                    got.len(),
                    got.last().map(Got::text)
                ),
            }
        }
        got
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn expect_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(g)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected upstream message {:?} on {}", g.text(), g.topic);
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}
