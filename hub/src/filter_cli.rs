//! `tern filter test` and `tern filter compile`: how an operator tries a filter on sample
//! messages before deploying it, and compiles it ahead of time for a gateway.
//!
//! `tern filter test --wasm F --config C --input messages.jsonl` reads one JSON message per
//! line:
//!
//! ```json
//! {"topic": "sensors/d1/temp", "payload": "21.5", "properties": {"site": "north"},
//!  "qos": 1, "retain": false, "client_id": "dev-1", "content_type": "text/plain"}
//! ```
//!
//! Only `topic` is required. `properties` is an object, or a list of `[key, value]` pairs
//! when a key repeats (MQTT allows it). Each message runs through the filter on its own
//! (a batch of one), exactly as in the hub, and one JSON line per message is printed:
//! `{"line": 1, "verdict": "kept"}`, `"dropped"`, `"failed"` (with `error`), or `"changed"`
//! with the `outputs` the hub would store: each with its `topic`, a `bridge` when routed to
//! one, and the payload and properties when the filter replaced them. A summary goes to
//! stderr; the exit status is 0 unless a line could not be read or the filter could not be
//! deployed (a `failed` verdict is a result, not an error of the command).

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_hub::filter_host::{
    Chain, DEAD_LETTER_ERROR_PROPERTY, FailurePolicy, FilterHost, FilterLimitsConfig, Routed,
    Target,
};
use tern_hub::message::{ClientId, Message, MessageProperties};
use tern_hub::metrics::FilterMetrics;
use tern_mqtt::QoS;

/// Arguments of `tern filter test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The filter: a component, a wit-bindgen core module, or a `.cwasm`.
    #[arg(long)]
    wasm: PathBuf,
    /// The filter's config string (as in the pipeline's `config = ...`).
    #[arg(long, default_value = "")]
    config: String,
    /// Messages, one JSON object per line; `-` reads stdin.
    #[arg(long, default_value = "-")]
    input: PathBuf,
}

/// Arguments of `tern filter compile`.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The filter to compile (component or wit-bindgen core module).
    input: PathBuf,
    /// Where to write the compiled filter (default: INPUT with extension `.cwasm`).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Target triple of the gateway (default: this machine), e.g. `aarch64-unknown-linux-gnu`.
    #[arg(long)]
    target: Option<String>,
}

/// A message as written in the input file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMessage {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    properties: InputProperties,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    content_type: Option<String>,
}

/// User properties: an object, or `[key, value]` pairs (for repeated keys).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputProperties {
    Map(serde_json::Map<String, serde_json::Value>),
    Pairs(Vec<(String, String)>),
}

impl Default for InputProperties {
    fn default() -> Self {
        InputProperties::Pairs(Vec::new())
    }
}

impl InputProperties {
    fn into_pairs(self) -> Vec<(String, String)> {
        match self {
            InputProperties::Pairs(pairs) => pairs,
            InputProperties::Map(map) => map
                .into_iter()
                .map(|(k, v)| {
                    let value = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, value)
                })
                .collect(),
        }
    }
}

/// What the filter did with one input message.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Kept,
    Dropped,
    Changed,
    Failed,
}

/// One output line.
#[derive(Debug, Serialize)]
struct Report {
    line: usize,
    verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<Output>,
}

/// A message as the hub would store it after the filter.
#[derive(Debug, Serialize)]
struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge: Option<String>,
    topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<Vec<(String, String)>>,
}

/// Topic of the dead letters `filter test` uses to see failures.
const FAILED_TOPIC: &str = "tern/filter-test/failed";

/// Runs `tern filter test`.
pub fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let limits = FilterLimitsConfig::default();
    let cache = std::env::temp_dir().join("tern-filter-cache");
    let host = FilterHost::new(
        &FilterLimitsConfig {
            cache_dir: Some(cache),
            ..limits
        },
        &std::env::temp_dir(),
        Arc::new(FilterMetrics::default()),
    )
    .context("starting the filter host")?;
    let filter = host
        .deploy("test", &args.wasm, &args.config)
        .with_context(|| format!("deploying {}", args.wasm.display()))?;
    let chain = Chain::new(
        vec![filter],
        FailurePolicy::DeadLetter(Arc::from(FAILED_TOPIC)),
    );
    let reader: Box<dyn std::io::BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut stdout = std::io::stdout().lock();
    let mut counts = [0usize; 4];
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let input: InputMessage =
            serde_json::from_str(&line).with_context(|| format!("line {number}: not a message"))?;
        let message = to_message(input).with_context(|| format!("line {number}"))?;
        let report = judge(number, &message, chain.run(vec![message.clone()]));
        counts[report.verdict as usize] += 1;
        serde_json::to_writer(&mut stdout, &report)?;
        writeln!(stdout)?;
    }
    stdout.flush()?;
    eprintln!(
        "{} messages: {} kept, {} dropped, {} changed, {} failed",
        counts.iter().sum::<usize>(),
        counts[Verdict::Kept as usize],
        counts[Verdict::Dropped as usize],
        counts[Verdict::Changed as usize],
        counts[Verdict::Failed as usize],
    );
    Ok(ExitCode::SUCCESS)
}

fn to_message(input: InputMessage) -> anyhow::Result<Message> {
    tern_mqtt::topic::validate_topic_name(&input.topic)
        .map_err(|e| anyhow::anyhow!("invalid topic {:?}: {e}", input.topic))?;
    let qos = match input.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => anyhow::bail!("invalid qos {other}"),
    };
    Ok(Message {
        topic: input.topic,
        payload: Bytes::from(input.payload.into_bytes()),
        qos,
        retain: input.retain,
        properties: MessageProperties {
            content_type: input.content_type,
            user_properties: input.properties.into_pairs(),
            ..MessageProperties::default()
        },
        expiry: None,
        publisher: ClientId::from(input.client_id.as_str()),
    })
}

/// The verdict on `input` given what the chain produced from it.
fn judge(line: usize, input: &Message, outputs: Vec<Routed>) -> Report {
    let failure = outputs.iter().find_map(|r| {
        (r.message.topic == FAILED_TOPIC).then(|| {
            r.message
                .properties
                .user_properties
                .iter()
                .find(|(k, _)| k == DEAD_LETTER_ERROR_PROPERTY)
                .map_or_else(String::new, |(_, v)| v.clone())
        })
    });
    if let Some(error) = failure {
        return Report {
            line,
            verdict: Verdict::Failed,
            error: Some(error),
            outputs: Vec::new(),
        };
    }
    let unchanged = |r: &Routed| r.target == Target::Local && r.message == *input;
    let verdict = match outputs.as_slice() {
        [] => Verdict::Dropped,
        [only] if unchanged(only) => Verdict::Kept,
        _ => Verdict::Changed,
    };
    let outputs = if verdict == Verdict::Changed {
        outputs
            .into_iter()
            .map(|r| {
                let edited =
                    r.message.payload != input.payload || r.message.properties != input.properties;
                Output {
                    bridge: match r.target {
                        Target::Local => None,
                        Target::Bridge { bridge } => Some(bridge.to_string()),
                    },
                    topic: r.message.topic,
                    payload: edited
                        .then(|| String::from_utf8_lossy(&r.message.payload).into_owned()),
                    properties: edited.then_some(r.message.properties.user_properties),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Report {
        line,
        verdict,
        error: None,
        outputs,
    }
}

/// Runs `tern filter compile`.
pub fn compile(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let wasm =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let compiled = tern_hub::filter_host::precompile(&wasm, args.target.as_deref())
        .with_context(|| format!("compiling {}", args.input.display()))?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.input.with_extension("cwasm"));
    std::fs::write(&output, &compiled).with_context(|| format!("writing {}", output.display()))?;
    println!("{} ({} bytes)", output.display(), compiled.len());
    Ok(ExitCode::SUCCESS)
}
