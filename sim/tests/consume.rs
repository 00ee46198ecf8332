//! `tern-sim consume` against a real mosquitto on a free loopback port: envelopes in both
//! formats and `each`-mode messages, with resent duplicates and lost units, published with
//! rumqttc exactly as the bridge would.

use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tern_envelope::{Envelope, Format, ForwardedMessage, MessageId, SeqRange, each, encode};
use tern_sim::consume::{Carrier, ConsumeConfig, Consumer, StopReason};

use tern_testkit::{free_port, start_mosquitto, start_mosquitto_on};

/// One upstream PUBLISH.
struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    user_properties: Vec<(String, String)>,
    retain: bool,
}

fn envelope_publish(topic: &str, envelope: &Envelope, format: Format) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        payload: encode(envelope, format).expect("valid envelope"),
        user_properties: vec![],
        retain: false,
    }
}

fn each_publish(topic: &str, gateway: &str, seq: u64, prev: Option<u64>) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        // A JSON payload: must not be mistaken for a JSON-lines envelope.
        payload: format!("{{\"seq\":{seq}}}").into_bytes(),
        user_properties: each::properties(&MessageId::new(gateway, seq), prev).to_vec(),
        retain: false,
    }
}

/// Publishes in order at QoS 1 from one connection and waits for every PUBACK.
async fn publish_all(port: u16, publishes: Vec<Outgoing>) {
    let mut options = MqttOptions::new("test-publisher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let expected = publishes.len();
    let sender = tokio::spawn(async move {
        for p in publishes {
            let properties = PublishProperties {
                user_properties: p.user_properties,
                ..Default::default()
            };
            client
                .publish_with_properties(p.topic, QoS::AtLeastOnce, p.retain, p.payload, properties)
                .await
                .expect("queue publish");
        }
        client
    });
    let mut acked = 0;
    let wait = tokio::time::timeout(Duration::from_secs(10), async {
        while acked < expected {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(err) => panic!("publisher connection: {err}"),
            }
        }
    });
    wait.await.expect("every PUBACK within 10 s");
    let client = sender.await.expect("sender task");
    let _ = client.disconnect().await;
}

fn message(seq: u64, topic: &str) -> ForwardedMessage {
    ForwardedMessage {
        seq,
        topic: topic.into(),
        received_ms: 1_700_000_000_000 + seq,
        qos: 1,
        retain: false,
        content_type: None,
        user_properties: vec![],
        payload: format!("m{seq}").into_bytes(),
    }
}

fn envelope(prev_seq: Option<u64>, last_seq: u64, seqs: &[u64]) -> Envelope {
    Envelope {
        gateway: "gw-a".into(),
        prev_seq,
        last_seq,
        created_ms: 1_700_000_001_000,
        messages: seqs.iter().map(|&s| message(s, "site/t")).collect(),
        replay: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_dropped_and_lost_units_reported() {
    let broker = start_mosquitto();
    let consumer = Consumer::subscribe(ConsumeConfig {
        target: format!("127.0.0.1:{}", broker.port()),
        client_id: "test-consumer".into(),
        filters: vec!["up/#".into()],
        duration: Duration::from_secs(15),
        expect: Some(8),
        keep_messages: true,
        ..Default::default()
    })
    .await
    .expect("subscribe");

    let e2 = envelope(Some(4), 9, &[6, 9]);
    let publishes = vec![
        // gw-a, envelopes: (none,4] (4,9] twice, (9,15] lost, (15,20] as JSON lines.
        envelope_publish("up/gw-a", &envelope(None, 4, &[1, 3]), Format::Postcard),
        envelope_publish("up/gw-a", &e2, Format::Postcard),
        envelope_publish("up/gw-a", &e2, Format::JsonLines),
        // gw-b, each mode: 2, 5, 5 again, 8 lost, 11.
        each_publish("up/gw-b/x", "gw-b", 2, None),
        each_publish("up/gw-b/x", "gw-b", 5, Some(2)),
        each_publish("up/gw-b/x", "gw-b", 5, Some(2)),
        Outgoing {
            topic: "up/junk".into(),
            payload: b"hello".to_vec(),
            user_properties: vec![],
            retain: false,
        },
        each_publish("up/gw-b/y", "gw-b", 11, Some(8)),
        envelope_publish("up/gw-a", &envelope(Some(15), 20, &[18]), Format::JsonLines),
    ];
    publish_all(broker.port(), publishes).await;
    let summary = consumer.collect().await.expect("collect");
    println!("{summary}");

    assert_eq!(summary.stopped, StopReason::Expected, "{summary}");
    assert_eq!(
        (
            summary.publishes,
            summary.envelopes,
            summary.each_messages,
            summary.unrecognized
        ),
        (9, 4, 4, 1),
        "{summary}"
    );
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (11, 8, 3),
        "{summary}"
    );
    assert_eq!((summary.gaps, summary.out_of_order), (2, 0), "{summary}");
    assert!(
        summary
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not an envelope"))
    );

    let [a, b] = summary.gateways.as_slice() else {
        panic!("two gateways expected: {summary}");
    };
    assert_eq!(a.report.gateway, "gw-a");
    assert_eq!((a.report.accepted, a.report.duplicates), (5, 2));
    assert_eq!(
        a.report.gaps,
        [SeqRange {
            first: 10,
            last: 15
        }]
    );
    assert_eq!(a.report.covered, Some(SeqRange { first: 0, last: 20 }));
    assert_eq!(a.report.watermark, Some(9));
    assert_eq!(b.report.gateway, "gw-b");
    assert_eq!((b.report.accepted, b.report.duplicates), (3, 1));
    assert_eq!(b.report.gaps, [SeqRange { first: 6, last: 8 }]);
    assert_eq!(b.report.unchained, 0);

    let ids: Vec<&str> = summary.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "gw-a:1", "gw-a:3", "gw-a:6", "gw-a:9", "gw-b:2", "gw-b:5", "gw-b:11", "gw-a:18"
        ]
    );
    let m18 = summary.messages.last().expect("messages kept");
    assert_eq!(
        (m18.topic.as_str(), m18.payload.as_slice()),
        ("site/t", &b"m18"[..])
    );
    assert_eq!(m18.carrier, Carrier::Envelope);
    let m11 = &summary.messages[6];
    assert_eq!(
        (m11.topic.as_str(), m11.carrier),
        ("up/gw-b/y", Carrier::Each)
    );
}

/// zstd-compressed envelopes (binary with the flag, JSON lines as a bare frame) are
/// decoded like plain ones: a resend in another form is a duplicate, the ranges chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_envelopes_are_decoded_and_deduplicated() {
    let broker = start_mosquitto();
    let consumer = Consumer::subscribe(ConsumeConfig {
        target: format!("127.0.0.1:{}", broker.port()),
        client_id: "test-consumer-zstd".into(),
        filters: vec!["up/#".into()],
        duration: Duration::from_secs(15),
        expect: Some(5),
        keep_messages: true,
        ..Default::default()
    })
    .await
    .expect("subscribe");
    let zstd = |envelope: &Envelope, format: Format| {
        let mut p = envelope_publish("up/gw-z", envelope, format);
        p.payload = tern_envelope::compress::compress(&p.payload, 3).expect("compress");
        p
    };
    let first = envelope(None, 4, &[1, 3]);
    let second = envelope(Some(4), 9, &[6, 8, 9]);
    publish_all(
        broker.port(),
        // The fifth unique message comes last, so the resend is counted before the stop.
        vec![
            zstd(&second, Format::JsonLines),
            zstd(&second, Format::Postcard),
            zstd(&first, Format::Postcard),
        ],
    )
    .await;
    let summary = consumer.collect().await.expect("collect");
    println!("{summary}");
    assert_eq!(summary.stopped, StopReason::Expected, "{summary}");
    assert_eq!(
        (summary.envelopes, summary.unrecognized, summary.duplicates),
        (3, 0, 3),
        "{summary}"
    );
    assert_eq!((summary.unique, summary.gaps), (5, 0), "{summary}");
    let ids: Vec<&str> = summary.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["gw-a:6", "gw-a:8", "gw-a:9", "gw-a:1", "gw-a:3"]);
    let payloads: Vec<&[u8]> = summary
        .messages
        .iter()
        .map(|m| m.payload.as_slice())
        .collect();
    assert_eq!(payloads, [&b"m6"[..], b"m8", b"m9", b"m1", b"m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_after_the_duration_when_nothing_arrives() {
    let broker = start_mosquitto();
    let started = Instant::now();
    let summary = tern_sim::consume::run(ConsumeConfig {
        target: format!("127.0.0.1:{}", broker.port()),
        filters: vec!["up/#".into()],
        duration: Duration::from_millis(500),
        expect: Some(1),
        ..Default::default()
    })
    .await
    .expect("run");
    assert_eq!(summary.stopped, StopReason::Duration);
    assert_eq!((summary.publishes, summary.unique, summary.gaps), (0, 0, 0));
    assert!(summary.gateways.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_an_error() {
    let port = free_port();
    let result = tern_sim::consume::run(ConsumeConfig {
        target: format!("127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    assert!(result.is_err());
}

/// The binary: a retained envelope is delivered on subscribe, so no race with startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_a_json_summary() {
    let broker = start_mosquitto();
    let mut retained = envelope_publish("up/gw-a", &envelope(None, 7, &[2, 7]), Format::Postcard);
    retained.retain = true;
    publish_all(broker.port(), vec![retained]).await;
    let target = format!("127.0.0.1:{}", broker.port());
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tern-sim"))
            .args([
                "consume", "--target", &target, "--topic", "up/#", "--expect", "2",
            ])
            .args(["--duration", "10", "--json"])
            .output()
            .expect("run tern-sim consume")
    });
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("tern-sim consume exits within 20 s")
        .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    assert_eq!(json["stopped"], "expected");
    assert_eq!(json["unique"], 2);
    assert_eq!(json["duplicates"], 0);
    assert_eq!(json["gateways"][0]["gateway"], "gw-a");
    assert_eq!(json["gateways"][0]["watermark"], 7);
    assert_eq!(json["gateways"][0]["gaps"], serde_json::json!([]));
}

/// The upstream broker restarts while the consumer listens: it reconnects, subscribes
/// again and receives what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_after_the_broker_restarts() {
    let broker = start_mosquitto();
    let port = broker.port();
    let consumer = Consumer::subscribe(ConsumeConfig {
        target: format!("127.0.0.1:{port}"),
        client_id: "test-restart".into(),
        filters: vec!["up/#".into()],
        duration: Duration::from_secs(20),
        expect: Some(2),
        ..Default::default()
    })
    .await
    .expect("subscribe");
    let collecting = tokio::spawn(consumer.collect());
    drop(broker);
    let broker = start_mosquitto_on(port);
    // Retained, so it reaches the consumer whenever its new subscription lands.
    let mut retained = envelope_publish("up/gw-a", &envelope(None, 7, &[2, 7]), Format::Postcard);
    retained.retain = true;
    publish_all(broker.port(), vec![retained]).await;
    let summary = tokio::time::timeout(Duration::from_secs(30), collecting)
        .await
        .expect("collect ends within its duration")
        .expect("join")
        .expect("collect");
    println!("{summary}");
    assert_eq!(summary.stopped, StopReason::Expected, "{summary}");
    assert!(summary.reconnects >= 1, "{summary}");
    assert_eq!((summary.unique, summary.gaps), (2, 0), "{summary}");
}
