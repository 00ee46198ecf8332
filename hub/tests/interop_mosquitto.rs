//! Interoperability with the mosquitto command-line clients (`mosquitto_pub`,
//! `mosquitto_sub`), MQTT 3.1.1 and 5.0.

mod common;

use common::*;

/// mosquitto_pub → hub → mosquitto_sub at every QoS, for both protocol versions (and across
/// them); the delivered QoS is the minimum of both sides.
#[test]
fn pub_sub_all_qos_both_versions() {
    let hub = Hub::start();
    for sub_level in [V311, V5] {
        for pub_level in [V311, V5] {
            for qos in 0..3u8 {
                let topic = format!("mq/{sub_level}/{pub_level}/{qos}");
                let sub = MosquittoSub::start(&hub, sub_level, &topic, 2, 1, 10);
                let payload = format!("hello-{sub_level}-{pub_level}-{qos}");
                mosquitto_pub(&hub, pub_level, &topic, &payload, qos, &[]);
                let got = sub.messages();
                assert_eq!(
                    got,
                    vec![SubLine {
                        retain: false,
                        qos,
                        topic: topic.clone(),
                        payload
                    }],
                    "{topic}\n{}",
                    hub.logs()
                );
            }
        }
    }
    hub.finish();
}

/// Subscription QoS caps the delivered QoS.
#[test]
fn subscription_qos_downgrades() {
    let hub = Hub::start();
    let sub = MosquittoSub::start(&hub, V5, "mq/down", 1, 1, 10);
    mosquitto_pub(&hub, V5, "mq/down", "two", 2, &[]);
    assert_eq!(sub.messages().first().map(|m| m.qos), Some(1));
    hub.finish();
}

/// A retained message from mosquitto_pub reaches a later mosquitto_sub with the retain flag.
#[test]
fn retained_message() {
    let hub = Hub::start();
    for level in [V311, V5] {
        let topic = format!("mq/retained/{level}");
        mosquitto_pub(&hub, level, &topic, "kept", 1, &["-r"]);
        let sub = MosquittoSub::start(&hub, level, &topic, 1, 1, 10);
        assert_eq!(
            sub.messages(),
            vec![SubLine {
                retain: true,
                qos: 1,
                topic: topic.clone(),
                payload: "kept".into()
            }]
        );
        // Clearing with an empty retained message.
        mosquitto_pub(&hub, level, &topic, "", 1, &["-r"]);
        let sub = MosquittoSub::start(&hub, level, &topic, 1, 1, 1);
        assert_eq!(
            sub.messages(),
            vec![],
            "cleared retained message still delivered"
        );
    }
    hub.finish();
}

/// Wildcard subscription receiving several messages from several publishers.
#[test]
fn wildcard_subscription_many_messages() {
    let hub = Hub::start();
    let sub = MosquittoSub::start(&hub, V311, "mq/many/#", 1, 6, 15);
    for i in 0..6 {
        let level = if i % 2 == 0 { V311 } else { V5 };
        mosquitto_pub(
            &hub,
            level,
            &format!("mq/many/{i}"),
            &format!("m{i}"),
            1,
            &[],
        );
    }
    let mut got: Vec<String> = sub.messages().into_iter().map(|m| m.payload).collect();
    got.sort();
    assert_eq!(got, (0..6).map(|i| format!("m{i}")).collect::<Vec<_>>());
    hub.finish();
}
