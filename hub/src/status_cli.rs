//! `tern status`: what a running hub reports about itself.
//!
//! By default it asks the admin API ([`admin`]): clients, message rates, store, filters and
//! bridges, at `--admin URL`, or at the `[admin] bind` of `--config FILE` (whose token it
//! uses), or at the default admin address.
//!
//! With `--target HOST:PORT` it reads the hub the way any MQTT client can instead, for hubs
//! without the admin API: subscribes to `$SYS/broker/#`, collects the retained values for a
//! short, bounded time, and prints them grouped by their first topic level (`clients`,
//! `messages`, `store`, `filters`, ...), with one group per bridge under
//! `bridges/<name>/...`; or as JSON. Knows no topic names beyond that layout, so new
//! counters show up without changes.
//!
//! `$SYS` values appear once the hub has published its first round, which it does at start-up and
//! then every `[session] sys_interval` (zero disables them: `tern status` then reports that
//! nothing arrived and exits with status 1). They are as of the hub's last round, so up to
//! one `sys_interval` old. A connection failure also exits with status 1.

mod admin;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;

/// Topic filter of the hub's own counters.
const SYS_FILTER: &str = "$SYS/broker/#";
/// Prefix stripped from every topic before grouping.
const SYS_PREFIX: &str = "$SYS/broker/";
/// Group of values directly under the prefix (`version`, `uptime`).
const BROKER_GROUP: &str = "broker";
/// First level whose second level names one bridge.
const BRIDGES: &str = "bridges";
/// Order of the well-known groups; others follow alphabetically, bridges last.
const GROUP_ORDER: [&str; 10] = [
    BROKER_GROUP,
    "clients",
    "connections",
    "subscriptions",
    "messages",
    "packets",
    "bytes",
    "errors",
    "store",
    "filters",
];

/// Arguments of `tern status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The admin API, `http://HOST:PORT` (default: `[admin] bind` of --config, else
    /// http://127.0.0.1:9883).
    #[arg(long, conflicts_with = "target")]
    pub admin: Option<String>,
    /// The hub's configuration file: its admin address and token.
    #[arg(short, long, conflicts_with = "target")]
    pub config: Option<PathBuf>,
    /// The admin API's bearer token.
    #[arg(long, conflicts_with_all = ["token_file", "target"])]
    pub token: Option<String>,
    /// File holding the admin API's bearer token (first line).
    #[arg(long, conflicts_with = "target")]
    pub token_file: Option<PathBuf>,
    /// Counters are read twice this far apart for the rates (admin API).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Read `$SYS/broker/#` over MQTT from this listener instead of the admin API.
    #[arg(long, visible_alias = "mqtt")]
    pub target: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to collect retained values after subscribing (MQTT).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// How long connecting (and each request, or subscribing) may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// Runs `tern status`: exit status 0 with a report; 1 when the hub cannot be read (or, over
/// MQTT, published nothing).
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let Some(target) = &args.target else {
        let admin = admin::AdminTarget::resolve(
            args.admin.as_deref(),
            args.config.as_ref(),
            args.token.as_deref(),
            args.token_file.as_ref(),
        )?;
        let authority = admin.authority.clone();
        let snapshot =
            runtime.block_on(admin::collect(admin, args.interval, args.connect_timeout))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&snapshot.to_json())?);
        } else {
            print!("{}", snapshot.to_text(&authority));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let values = runtime.block_on(collect(target, args))?;
    if values.is_empty() {
        eprintln!(
            "tern status: no $SYS values from {target} within {:?} (is [session] sys_interval \
             zero?)",
            args.wait
        );
        return Ok(ExitCode::FAILURE);
    }
    let report = Report::from_values(&values);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table(target));
    }
    Ok(ExitCode::SUCCESS)
}

/// Topic (without [`SYS_PREFIX`]) to payload, as retained on the hub.
type Values = BTreeMap<String, String>;

async fn collect(target: &str, args: &StatusArgs) -> anyhow::Result<Values> {
    let (host, port) = target
        .rsplit_once(':')
        .with_context(|| format!("--target {target:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in --target {target:?}"))?;
    let client_id = format!("tern-status-{}", std::process::id());
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client
        .subscribe(SYS_FILTER, QoS::AtMostOnce)
        .await
        .context("queueing the SUBSCRIBE")?;

    let mut values = Values::new();
    let connect_deadline = Instant::now() + args.connect_timeout;
    let mut collect_deadline = None;
    loop {
        let deadline = collect_deadline.unwrap_or(connect_deadline);
        let Ok(polled) = tokio::time::timeout_at(deadline, eventloop.poll()).await else {
            if collect_deadline.is_none() {
                bail!("no answer from {target} within {:?}", args.connect_timeout);
            }
            break;
        };
        match polled.with_context(|| format!("connecting to {target}"))? {
            Event::Incoming(Packet::SubAck(_)) => {
                collect_deadline = Some(Instant::now() + args.wait);
            }
            Event::Incoming(Packet::Publish(p)) => {
                if let Some(path) = p.topic.strip_prefix(SYS_PREFIX) {
                    let value = String::from_utf8_lossy(&p.payload).into_owned();
                    values.insert(path.to_owned(), value);
                }
            }
            _ => {}
        }
    }
    // Best effort: the hub cleans up a vanished client anyway.
    if client.disconnect().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }
    Ok(values)
}

/// Which table a value belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// A first topic level (or [`BROKER_GROUP`]); the number orders the known ones first.
    Section(usize, String),
    /// `bridges/<name>/...`.
    Bridge(String),
}

/// The values, grouped: group -> key (the topic levels below the group, `/`-joined) -> value.
#[derive(Debug, Default)]
struct Report {
    groups: BTreeMap<Group, BTreeMap<String, String>>,
}

impl Report {
    fn from_values(values: &Values) -> Self {
        let mut report = Report::default();
        for (path, value) in values {
            let (group, key) = match path.split_once('/') {
                None => (section(BROKER_GROUP), path.clone()),
                Some((BRIDGES, rest)) => match rest.split_once('/') {
                    Some((name, key)) => (Group::Bridge(name.to_owned()), key.to_owned()),
                    None => (Group::Bridge(rest.to_owned()), String::new()),
                },
                Some((first, rest)) => (section(first), rest.to_owned()),
            };
            report
                .groups
                .entry(group)
                .or_default()
                .insert(key, value.clone());
        }
        report
    }

    fn to_table(&self, target: &str) -> String {
        let width = self
            .groups
            .values()
            .flat_map(|g| g.keys())
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(8);
        let mut out = String::new();
        let _ = writeln!(out, "tern status of {target}");
        for (group, values) in &self.groups {
            let title = match group {
                Group::Section(_, name) => name.clone(),
                Group::Bridge(name) => format!("bridge {name}"),
            };
            let _ = writeln!(out, "\n{title}");
            for (key, value) in values {
                let key = if key.is_empty() { "(value)" } else { key };
                let _ = writeln!(out, "  {key:<width$}  {value}");
            }
        }
        out
    }

    /// `{"<group>": {"<key>": value}, "bridges": {"<name>": {"<key>": value}}}`; values
    /// that parse as numbers are numbers.
    fn to_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        let mut bridges = serde_json::Map::new();
        for (group, values) in &self.groups {
            let object: serde_json::Map<String, serde_json::Value> = values
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect();
            match group {
                Group::Section(_, name) => {
                    root.insert(name.clone(), object.into());
                }
                Group::Bridge(name) => {
                    bridges.insert(name.clone(), object.into());
                }
            }
        }
        if !bridges.is_empty() {
            root.insert(BRIDGES.to_owned(), bridges.into());
        }
        root.into()
    }
}

fn section(name: &str) -> Group {
    let rank = GROUP_ORDER
        .iter()
        .position(|g| *g == name)
        .unwrap_or(GROUP_ORDER.len());
    Group::Section(rank, name.to_owned())
}

fn json_value(text: &str) -> serde_json::Value {
    if let Ok(n) = text.parse::<u64>() {
        return n.into();
    }
    if let Ok(n) = text.parse::<i64>() {
        return n.into();
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && text.bytes().any(|b| b.is_ascii_digit()) => f.into(),
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sample() -> Report {
        Report::from_values(&values(&[
            ("version", "0.1.0"),
            ("uptime", "12"),
            ("clients/connected", "2"),
            ("store/records", "40"),
            ("zeta/x", "1"),
            ("messages/retained/count", "3"),
            ("bridges/cloud/connected", "true"),
            ("bridges/cloud/backlog/messages", "5"),
            ("bridges/alt/last_error", "connection refused"),
        ]))
    }

    #[test]
    fn groups_known_sections_first_and_bridges_by_name() {
        let table = sample().to_table("h:1");
        let titles: Vec<&str> = table
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(' '))
            .collect();
        assert_eq!(
            titles,
            [
                "tern status of h:1",
                "broker",
                "clients",
                "messages",
                "store",
                "zeta",
                "bridge alt",
                "bridge cloud"
            ]
        );
        assert!(table.contains("\n  backlog/messages  5\n"), "{table}");
        assert!(table.contains("\n  retained/count    3\n"), "{table}");
    }

    #[test]
    fn json_nests_bridges_and_parses_numbers() {
        let json = sample().to_json();
        assert_eq!(json["broker"]["version"], "0.1.0");
        assert_eq!(json["broker"]["uptime"], 12);
        assert_eq!(json["clients"]["connected"], 2);
        assert_eq!(json["bridges"]["cloud"]["backlog/messages"], 5);
        assert_eq!(json["bridges"]["cloud"]["connected"], "true");
        assert_eq!(json["bridges"]["alt"]["last_error"], "connection refused");
        assert!(json.get("bridge").is_none());
    }

    #[test]
    fn json_values() {
        assert_eq!(json_value("7"), 7);
        assert_eq!(json_value("-7"), -7);
        assert_eq!(json_value("1.5"), 1.5);
        assert_eq!(json_value("inf"), "inf");
        assert_eq!(json_value("NaN"), "NaN");
        assert_eq!(json_value(""), "");
    }
}
