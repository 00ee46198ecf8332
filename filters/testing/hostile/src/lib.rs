//! A filter that misbehaves on purpose, chosen by its config string, for the hub's sandbox
//! tests. It implements the WIT exports with `wit_bindgen` directly, because the SDK would
//! not let it return malformed verdicts.
//!
//! | config | behaviour |
//! | --- | --- |
//! | `ok` | keeps everything |
//! | `init-fail` | `init` returns `Err("refused by config")` |
//! | `loop` | `process` spins forever |
//! | `loop-on:<key>` | spins forever if a message in the batch has user property `<key>`, else keeps all |
//! | `bomb` | `process` allocates memory without bound |
//! | `trap` | `process` panics (a trap: the guest aborts on panic) |
//! | `trap-on:<key>` | traps if a message in the batch has user property `<key>`, else keeps all |
//! | `wrong-count` | returns (well-formed) verdicts for N+1 messages |
//! | `garbage` | returns bytes that do not parse as verdicts |
//! | `err` | `process` returns `Err("hostile error")` |
//! | `log-spam` | logs 10,000 lines per batch, then keeps all |
//! | `drop-all` | drops every message |
//! | `bad-template` | `init` declares a template holding `#` (the hub refuses the deployment) |
//! | `bad-span` | declares template 0 (`t/{0}`) and routes every message to it with a span past the end of its topic |
//!
//! Any other config fails `init`; `process` before a successful `init` returns `Err`.

use tern_filter_abi::{
    AnyDestination, Batch, Template, TemplatePart, TemplateRoute, TopicSpan, VerdictWriter,
};

/// Lines `log-spam` writes per batch.
pub const SPAM_LINES: usize = 10_000;
/// What `garbage` returns: version 0xff, which no reader accepts.
pub const GARBAGE: &[u8] = b"\xffnot verdicts";

/// The misbehaviour selected by the config string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Loop,
    LoopOn(String),
    Bomb,
    Trap,
    TrapOn(String),
    WrongCount,
    Garbage,
    Err,
    LogSpam,
    DropAll,
    BadTemplate,
    BadSpan,
}

impl Mode {
    /// Parses a config string; `init-fail` and unknown configs are errors.
    pub fn parse(config: &str) -> Result<Self, String> {
        if let Some(key) = config.strip_prefix("loop-on:") {
            return Ok(Self::LoopOn(key.into()));
        }
        if let Some(key) = config.strip_prefix("trap-on:") {
            return Ok(Self::TrapOn(key.into()));
        }
        Ok(match config {
            "ok" => Self::Ok,
            "init-fail" => return Err("refused by config".into()),
            "loop" => Self::Loop,
            "bomb" => Self::Bomb,
            "trap" => Self::Trap,
            "wrong-count" => Self::WrongCount,
            "garbage" => Self::Garbage,
            "err" => Self::Err,
            "log-spam" => Self::LogSpam,
            "drop-all" => Self::DropAll,
            "bad-template" => Self::BadTemplate,
            "bad-span" => Self::BadSpan,
            other => return Err(format!("unknown hostile config {other:?}")),
        })
    }
}

impl Mode {
    /// The topic templates `init` declares.
    pub fn templates(&self) -> Vec<Template> {
        let text = |s: &str| TemplatePart::Text(s.into());
        match self {
            Self::BadTemplate => vec![Template {
                bridge: None,
                parts: vec![text("a/#")],
            }],
            Self::BadSpan => vec![Template {
                bridge: None,
                parts: vec![text("t/"), TemplatePart::Span(0)],
            }],
            _ => Vec::new(),
        }
    }
}

/// Runs `mode` over a packed batch. `log` receives the `log-spam` lines.
pub fn process(mode: &Mode, batch: &[u8], mut log: impl FnMut(&str)) -> Result<Vec<u8>, String> {
    let parsed = Batch::parse(batch).map_err(|e| e.to_string())?;
    let count = parsed.len();
    let has_key = |key: &str| {
        parsed
            .iter()
            .any(|m| m.is_ok_and(|m| m.property(key).is_some()))
    };
    match mode {
        Mode::Ok => {}
        Mode::Loop => spin(),
        Mode::LoopOn(key) if has_key(key) => spin(),
        Mode::LoopOn(_) => {}
        Mode::Bomb => bomb(),
        Mode::Trap => panic!("hostile trap"),
        Mode::TrapOn(key) if has_key(key) => panic!("hostile trap on {key:?}"),
        Mode::TrapOn(_) => {}
        Mode::WrongCount => {
            // Form 1 (a dropped message) so the count is actually in the buffer.
            let mut w = VerdictWriter::new(Vec::new(), count + 1);
            w.drop_message(count);
            return Ok(w.finish());
        }
        Mode::Garbage => return Ok(GARBAGE.to_vec()),
        Mode::Err => return Err("hostile error".into()),
        Mode::LogSpam => {
            for i in 0..SPAM_LINES {
                log(&format!("spam line {i} of {SPAM_LINES}"));
            }
        }
        Mode::BadTemplate => {}
        Mode::BadSpan => {
            let mut w = VerdictWriter::new(Vec::new(), count);
            let spans = [TopicSpan {
                start: 0,
                end: 60_000,
            }];
            for i in 0..count {
                let route = TemplateRoute {
                    template: 0,
                    spans: &spans,
                };
                w.route_any(i, [AnyDestination::Template(route)])
                    .map_err(|e| e.to_string())?;
            }
            return Ok(w.finish());
        }
        Mode::DropAll => {
            let mut w = VerdictWriter::new(Vec::new(), count);
            for i in 0..count {
                w.drop_message(i);
            }
            return Ok(w.finish());
        }
    }
    Ok(VerdictWriter::new(Vec::new(), count).finish())
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed.
        hoard.push(std::hint::black_box(vec![0xa5; 1 << 20]));
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "generated canonical-ABI glue")]
mod guest {
    //! The WIT exports over a [`Mode`] held in a thread-local. The generated bindings and
    //! their `export!` expansion are unsafe canonical-ABI glue; nothing else here is.

    mod bindings {
        //! `wit_bindgen` bindings for `wit/filter.wit`.

        wit_bindgen::generate!({ path: "../../../wit", world: "filter" });
    }

    use std::cell::RefCell;

    use bindings::tern::filter::host::{self, Level};
    use bindings::{Guest, Needs, Setup};

    use super::{Mode, process};

    thread_local! {
        static MODE: RefCell<Option<Mode>> = const { RefCell::new(None) };
    }

    struct Hostile;

    impl Guest for Hostile {
        fn init(config: String) -> Result<Setup, String> {
            let mode = Mode::parse(&config);
            MODE.with_borrow_mut(|slot| *slot = mode.as_ref().ok().cloned());
            mode.map(|mode| Setup {
                // The `*-on:<key>` modes read user properties.
                needs: Needs::PROPERTIES,
                templates: mode.templates().into_iter().map(wit_template).collect(),
            })
        }

        fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
            let mode = MODE
                .with_borrow(Clone::clone)
                .ok_or("process called before a successful init")?;
            process(&mode, &batch, |line| host::log(Level::Warn, line))
        }
    }

    fn wit_template(template: super::Template) -> bindings::Template {
        bindings::Template {
            bridge: template.bridge,
            parts: template
                .parts
                .into_iter()
                .map(|part| match part {
                    super::TemplatePart::Text(text) => bindings::TemplatePart::Text(text),
                    super::TemplatePart::Span(n) => bindings::TemplatePart::Span(n),
                })
                .collect(),
        }
    }

    bindings::export!(Hostile with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use tern_filter_abi::{BatchWriter, RecordRef, Verdicts};

    use super::*;

    fn batch(keys: &[&str]) -> Vec<u8> {
        let mut w = BatchWriter::new(Vec::new(), false);
        for key in keys {
            let rec = RecordRef {
                topic: "t",
                client_id: "",
                qos: 0,
                retain: false,
                received_ms: 0,
                content_type: None,
                payload: None,
            };
            w.push(&rec, [(*key, "1")].into_iter()).unwrap();
        }
        w.finish()
    }

    fn run(config: &str, keys: &[&str]) -> Result<Vec<u8>, String> {
        process(&Mode::parse(config)?, &batch(keys), |_| {})
    }

    #[test]
    fn configs_parse() {
        assert_eq!(Mode::parse("init-fail"), Err("refused by config".into()));
        assert!(Mode::parse("nonsense").is_err());
        assert_eq!(
            Mode::parse("trap-on:poison"),
            Ok(Mode::TrapOn("poison".into()))
        );
        assert_eq!(Mode::parse("loop-on:slow"), Ok(Mode::LoopOn("slow".into())));
    }

    #[test]
    fn well_behaved_modes() {
        assert_eq!(run("ok", &["a", "b"]).unwrap(), [1, 0]);
        assert_eq!(run("trap-on:poison", &["a", "b"]).unwrap(), [1, 0]);
        assert_eq!(run("loop-on:slow", &["a"]).unwrap(), [1, 0]);
        let dropped = run("drop-all", &["a", "b"]).unwrap();
        let v = Verdicts::parse(&dropped, 2).unwrap();
        assert!(!v.is_kept(0) && !v.is_kept(1));
        let mut lines = 0;
        let kept = process(&Mode::LogSpam, &batch(&["a"]), |_| lines += 1).unwrap();
        assert_eq!((kept.as_slice(), lines), (&[1, 0][..], SPAM_LINES));
    }

    #[test]
    fn malformed_results() {
        assert_eq!(run("err", &["a"]), Err("hostile error".into()));
        let garbage = run("garbage", &["a"]).unwrap();
        assert!(Verdicts::parse(&garbage, 1).is_err());
        let wrong = run("wrong-count", &["a", "b"]).unwrap();
        assert!(Verdicts::parse(&wrong, 2).is_err());
        assert!(Verdicts::parse(&wrong, 3).is_ok());
    }

    #[test]
    #[should_panic(expected = "hostile trap on \"poison\"")]
    fn trap_on_key() {
        let _ = run("trap-on:poison", &["a", "poison"]);
    }
}
