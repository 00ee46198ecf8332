//! The filter benchmarks' input: telemetry messages shaped like a gateway's (topic
//! `sensors/dev-{i}/temp`, user properties `temperature` 20–39 and `site` north/south, a
//! 256 B payload). Shared by `benches/filters.rs` and `examples/chain_cost.rs`; the guest
//! SDK's `testing::telemetry` builds the same messages for the native guest measurements.

use bytes::Bytes;
use tern_hub::message::{ClientId, Message, MessageProperties};
use tern_mqtt::QoS;

/// `n` telemetry messages.
pub fn batch(n: usize) -> Vec<Message> {
    let payload = Bytes::from(vec![b'x'; 256]);
    (0..n)
        .map(|i| Message {
            topic: format!("sensors/dev-{i}/temp"),
            payload: payload.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties {
                user_properties: vec![
                    ("temperature".into(), (20 + i % 20).to_string()),
                    (
                        "site".into(),
                        if i % 2 == 0 { "north" } else { "south" }.into(),
                    ),
                ],
                ..MessageProperties::default()
            },
            expiry: None,
            publisher: ClientId::from("dev"),
        })
        .collect()
}
