//! The library entry point in-process: `tern_hub::run` on a listener bound by the caller,
//! stopped by the caller's own shutdown future.

mod common;

use std::net::SocketAddr;

use common::*;
use tern_hub::config::{Config, ListenerConfig};

#[tokio::test]
async fn run_serves_until_shutdown_future_completes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("data"),
        listener: vec![ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ListenerConfig::default()
        }],
        ..Config::default()
    };
    let listeners = tern_hub::bind_listeners(&config).await.expect("bind");
    let addr = listeners[0].local_addr().expect("local addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let hub = tokio::spawn(tern_hub::run(listeners, config, async {
        let _ = stop_rx.await;
    }));

    let (mut sub, _) = RawClient::connect_ok(addr, Connect::v5("inproc-sub")).await;
    sub.subscribe("inproc/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(addr, Connect::v4("inproc-pub")).await;
    publ.publish(Pub::new("inproc/t", b"in process").qos(1, 0))
        .await;
    assert_eq!(sub.recv_publish_acked().await.payload, b"in process");

    stop_tx.send(()).expect("hub still running");
    let got = sub.expect_closed(EXIT_TIMEOUT).await;
    assert!(
        matches!(got.as_slice(), [Incoming::Disconnect { reason: 0x8B, .. }]),
        "{got:?}"
    );
    let result = tokio::time::timeout(EXIT_TIMEOUT, hub)
        .await
        .expect("run returns after shutdown");
    result.expect("run task").expect("run result");
    assert!(dir.path().join("data").is_dir(), "data dir created");
}
