//! The SDK end to end on the host: every verdict shape through `testing::run` (which packs
//! with the ABI writer, runs `process_batch` and parses the verdicts as the hub does), the
//! entry points behind `export!`, and errors.

use std::cell::RefCell;

use tern_filter::testing::{Outcome, TestMessage, run};
use tern_filter::{Filter, Message, NewMessage, Route, Verdict, process_batch};
use tern_filter_abi::{BatchWriter, RecordRef, Verdicts};

/// Decides by the `do` property: keep, drop, replace, route, both, none (empty routes),
/// bad-qos; records what it saw.
#[derive(Default)]
struct Scripted {
    seen_payloads: Vec<Option<Vec<u8>>>,
}

impl Filter for Scripted {
    fn init(config: &str) -> Result<Self, String> {
        match config {
            "" => Ok(Self::default()),
            other => Err(format!("unexpected config {other:?}")),
        }
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        self.seen_payloads.push(msg.payload().map(Into::into));
        let renamed = || NewMessage::from(msg).with_topic(format!("new/{}", msg.topic()));
        match msg.property("do").unwrap_or("keep") {
            "drop" => Verdict::Drop,
            "replace" => Verdict::Replace(renamed().with_payload(*b"P").with_property("x", "1")),
            "route" => Verdict::Route(vec![Route::local("l"), Route::bridge("cloud", "up/1")]),
            "both" => Verdict::ReplaceAndRoute(renamed(), vec![Route::local("l2")]),
            "none" => Verdict::Route(Vec::new()),
            "both-none" => Verdict::ReplaceAndRoute(renamed(), Vec::new()),
            "bad-qos" => Verdict::Replace(renamed().with_qos(3)),
            _ => Verdict::Keep,
        }
    }
}

/// The same, asking for payloads.
struct WithPayload(Scripted);

impl Filter for WithPayload {
    const NEEDS_PAYLOAD: bool = true;

    fn init(config: &str) -> Result<Self, String> {
        Scripted::init(config).map(Self)
    }

    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        self.0.filter(msg)
    }
}

fn msg(action: &str) -> TestMessage {
    TestMessage::new("t")
        .property("do", action)
        .property("do", "ignored duplicate")
        .qos(1)
        .retain(true)
        .client_id("dev")
        .content_type("text/plain")
        .payload(*b"body")
}

#[test]
fn every_verdict_shape_reaches_the_hub_side() {
    let mut f = Scripted::init("").unwrap();
    let out = run(
        &mut f,
        &[
            msg("keep"),
            msg("drop"),
            msg("replace"),
            msg("route"),
            msg("both"),
            msg("none"),
            msg("both-none"),
        ],
    )
    .unwrap();
    let base = NewMessage::new("new/t")
        .with_qos(1)
        .with_retain(true)
        .with_content_type("text/plain")
        .with_property("do", "replace")
        .with_property("do", "ignored duplicate");
    assert_eq!(out[0], Outcome::kept());
    assert_eq!(out[1], Outcome::dropped());
    assert_eq!(
        out[2],
        Outcome::replaced(base.clone().with_payload(*b"P").with_property("x", "1"))
    );
    assert_eq!(
        out[3],
        Outcome::routed(vec![Route::local("l"), Route::bridge("cloud", "up/1")])
    );
    let mut both = base;
    both.properties[0].1 = "both".into();
    assert_eq!(
        out[4],
        Outcome {
            kept: true,
            replacement: Some(both),
            routes: Some(vec![Route::local("l2")]),
        }
    );
    assert_eq!(
        out[5],
        Outcome::dropped(),
        "an empty route list delivers nowhere"
    );
    assert_eq!(out[6], Outcome::dropped());
}

#[test]
fn payloads_arrive_only_when_asked_for() {
    let mut without = Scripted::init("").unwrap();
    run(&mut without, &[msg("keep")]).unwrap();
    assert_eq!(without.seen_payloads, [None]);
    let mut with = WithPayload::init("").unwrap();
    run(&mut with, &[msg("keep"), TestMessage::new("empty")]).unwrap();
    assert_eq!(
        with.0.seen_payloads,
        [Some(b"body".to_vec()), Some(Vec::new())]
    );
}

#[test]
fn unwritable_verdicts_fail_the_batch_naming_the_message() {
    let mut f = Scripted::init("").unwrap();
    let err = run(&mut f, &[msg("keep"), msg("bad-qos")]).unwrap_err();
    assert_eq!(err, "message 1: QoS 3 is not 0, 1 or 2");
}

#[test]
fn malformed_batches_are_errors() {
    let mut f = Scripted::init("").unwrap();
    assert!(process_batch(&mut f, &[], Vec::new()).is_err());
    assert!(process_batch(&mut f, &[2, 0, 0, 0, 0, 0, 0, 0], Vec::new()).is_err());
    let mut w = BatchWriter::new(Vec::new(), false);
    let rec = RecordRef {
        topic: "t",
        client_id: "",
        qos: 0,
        retain: false,
        received_ms: 0,
        content_type: None,
        payload: None,
    };
    w.push(&rec, [].into_iter()).unwrap();
    let mut batch = w.finish();
    batch.push(0);
    let err = process_batch(&mut f, &batch, Vec::new()).unwrap_err();
    assert_eq!(err, "batch: 1 unexpected bytes after the last field");
}

#[test]
fn process_batch_reuses_the_output_allocation() {
    let mut f = Scripted::init("").unwrap();
    let mut w = BatchWriter::new(Vec::new(), false);
    let rec = RecordRef {
        topic: "t",
        client_id: "",
        qos: 0,
        retain: false,
        received_ms: 0,
        content_type: None,
        payload: None,
    };
    for _ in 0..20 {
        w.push(&rec, [("do", "drop")].into_iter()).unwrap();
    }
    let batch = w.finish();
    let out = Vec::with_capacity(1024);
    let ptr = out.as_ptr();
    let verdicts = process_batch(&mut f, &batch, out).unwrap();
    assert_eq!(verdicts.as_ptr(), ptr);
    let parsed = Verdicts::parse(&verdicts, 20).unwrap();
    assert!((0..20).all(|i| !parsed.is_kept(i)));
}

thread_local! {
    static SLOT: tern_filter::__private::Slot<Scripted> = const { RefCell::new(None) };
}

/// The entry points `export!` wires to the WIT exports.
#[test]
fn process_before_a_successful_init_is_an_error() {
    use tern_filter::__private::{bindings::Needs, init, process};
    let batch = BatchWriter::new(Vec::new(), false).finish();
    assert_eq!(
        process(&SLOT, batch.clone()).unwrap_err(),
        "process called before a successful init"
    );
    assert_eq!(init(&SLOT, "bad").unwrap_err(), "unexpected config \"bad\"");
    assert!(process(&SLOT, batch.clone()).is_err());
    let setup = init(&SLOT, "").expect("valid config");
    // The default needs: properties, no payloads; no templates.
    assert_eq!(setup.needs, Needs::PROPERTIES);
    assert!(setup.templates.is_empty());
    assert_eq!(process(&SLOT, batch.clone()).unwrap(), [1, 0]);
    // A failed re-init leaves no instance behind.
    assert!(init(&SLOT, "bad").is_err());
    assert!(process(&SLOT, batch).is_err());
}

#[test]
fn host_functions_work_natively() {
    tern_filter::log::info("hello from a native test");
    let a = tern_filter::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = tern_filter::now_ms();
    assert!(
        b - a >= 20,
        "the clock moved {} ms over a 20 ms sleep",
        b - a
    );
}
