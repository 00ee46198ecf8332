//! `tern status` through the admin API: reads `/health`, `/clients`, `/store`, `/filters`,
//! `/bridges` and `/metrics`, reads `/metrics` and `/bridges` again one interval later for
//! rates, and prints a summary (or the answers and rates as one JSON document).
//!
//! The HTTP client is hyper's HTTP/1 connection, one keep-alive connection per run, every
//! step bounded by the connect timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tern_hub::admin::config::DEFAULT_ADMIN_BIND;
use tern_hub::config::Config;
use tokio::net::TcpStream;

/// Counters of `/metrics` turned into per-second rates, with their labels in the summary.
const RATES: [(&str, &str); 6] = [
    ("tern_messages_received_total", "messages_in"),
    ("tern_messages_sent_total", "messages_out"),
    ("tern_bytes_received_total", "bytes_in"),
    ("tern_bytes_sent_total", "bytes_out"),
    ("tern_messages_dropped_total", "messages_dropped"),
    ("tern_store_appends_total", "store_appends"),
];

/// Where the admin API is and how to authenticate.
#[derive(Debug)]
pub struct AdminTarget {
    /// `host:port`.
    pub authority: String,
    /// The bearer token, if any.
    pub token: Option<String>,
}

impl AdminTarget {
    /// From the command line: `--admin` (else the configuration's `[admin] bind`, else the
    /// default address) and `--token` / `--token-file` (else the configuration's token).
    pub fn resolve(
        admin: Option<&str>,
        config: Option<&PathBuf>,
        token: Option<&str>,
        token_file: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        let config = match config {
            Some(file) => Some(Config::load(file)?),
            None => None,
        };
        let authority = match admin {
            Some(url) => authority_of(url)?,
            None => {
                let mut bind = config.as_ref().map_or(DEFAULT_ADMIN_BIND, |c| c.admin.bind);
                // A wildcard bind is reached on loopback.
                if bind.ip().is_unspecified() {
                    bind.set_ip(match bind {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                bind.to_string()
            }
        };
        let token = match (token, token_file) {
            (Some(token), _) => Some(token.to_owned()),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the token file {}", file.display()))?;
                let token = text.lines().next().unwrap_or("").trim().to_owned();
                if token.is_empty() {
                    bail!("the token file {} holds no token", file.display());
                }
                Some(token)
            }
            (None, None) => match &config {
                Some(config) => config
                    .admin
                    .resolve_token()
                    .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?,
                None => None,
            },
        };
        Ok(Self { authority, token })
    }
}

/// `host:port` of `http://host:port[/...]` or `host:port`.
fn authority_of(url: &str) -> anyhow::Result<String> {
    if url.starts_with("https://") {
        bail!("--admin {url:?}: the admin API speaks plain HTTP (put TLS in front of it)");
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(authority.to_owned())
        }
        _ => bail!("--admin {url:?} is not http://host:port"),
    }
}

/// One keep-alive connection to the admin API.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
    target: AdminTarget,
    timeout: Duration,
}

impl Client {
    async fn connect(target: AdminTarget, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&target.authority))
            .await
            .with_context(|| format!("no answer from {} within {timeout:?}", target.authority))?
            .with_context(|| format!("connecting to the admin API at {}", target.authority))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Ends when the sender is dropped or the hub closes the connection.
        tokio::spawn(connection);
        Ok(Self {
            sender,
            target,
            timeout,
        })
    }

    /// `GET path`: the status and body.
    async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::get(path).header(header::HOST, &self.target.authority);
        if let Some(token) = &self.target.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::new())?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .with_context(|| format!("GET {path}: no answer within {:?}", self.timeout))?
            .with_context(|| format!("GET {path}"))
    }

    /// `GET path`, the body of a success; a refusal is an error naming the path and the
    /// hub's reason.
    async fn success(&mut self, path: &str) -> anyhow::Result<Bytes> {
        let (status, body) = self.get(path).await?;
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "GET {path}: 401, the admin API refused the token (give --token, --token-file \
                 or --config with the hub's [admin] token)"
            );
        }
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    /// `GET path` as JSON.
    async fn json(&mut self, path: &str) -> anyhow::Result<Value> {
        let body = self.success(path).await?;
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// `GET /metrics`: the unlabelled samples.
    async fn metrics(&mut self) -> anyhow::Result<BTreeMap<String, f64>> {
        let body = self.success("/metrics").await?;
        Ok(parse_metrics(&String::from_utf8_lossy(&body)))
    }
}

/// The samples of a Prometheus text exposition, summed by metric name over their labels
/// (`tern_messages_received_total{qos="0"}` and `{qos="1"}` give one total).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let name = series.split_once('{').map_or(series, |(name, _)| name);
        *totals.entry(name.to_owned()).or_insert(0.0) += value;
    }
    totals
}

/// Everything one run read.
#[derive(Debug)]
pub struct Snapshot {
    health: Value,
    clients: Value,
    store: Value,
    filters: Value,
    bridges: Value,
    /// Per-second rates over the interval, by [`RATES`] label.
    rates: BTreeMap<String, f64>,
    /// Messages forwarded per second over the interval, by bridge.
    bridge_rates: BTreeMap<String, f64>,
    interval: Duration,
}

/// Reads the admin API (see the module docs).
pub async fn collect(
    target: AdminTarget,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<Snapshot> {
    let mut client = Client::connect(target, timeout).await?;
    let health = client.json("/health").await?;
    let first = client.metrics().await?;
    let bridges_before = forwarded(&client.json("/bridges").await?);
    let started = tokio::time::Instant::now();
    tokio::time::sleep(interval).await;
    let second = client.metrics().await?;
    let bridges = client.json("/bridges").await?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let rates = RATES
        .iter()
        .filter_map(|(metric, label)| {
            let delta = second.get(*metric)? - first.get(*metric)?;
            Some(((*label).to_owned(), delta.max(0.0) / elapsed))
        })
        .collect();
    let bridge_rates = forwarded(&bridges)
        .into_iter()
        .map(|(name, now)| {
            let before = bridges_before.get(&name).copied().unwrap_or(now);
            (name, approx(now.saturating_sub(before)) / elapsed)
        })
        .collect();
    Ok(Snapshot {
        health,
        clients: client.json("/clients").await?,
        store: client.json("/store").await?,
        filters: client.json("/filters").await?,
        bridges,
        rates,
        bridge_rates,
        interval,
    })
}

/// `forwarded` of each bridge of a `/bridges` answer.
fn forwarded(bridges: &Value) -> BTreeMap<String, u64> {
    list(bridges, "bridges")
        .iter()
        .filter_map(|b| Some((b["name"].as_str()?.to_owned(), b["forwarded"].as_u64()?)))
        .collect()
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map_or(&[], Vec::as_slice)
}

fn num(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// `n` as a float, for rates and sizes shown with one decimal.
#[allow(clippy::cast_precision_loss, reason = "display only; exact below 2^53")]
fn approx(n: u64) -> f64 {
    n as f64
}

impl Snapshot {
    /// Every answer, and the rates, as one JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "health": self.health,
            "rates": {
                "interval_secs": self.interval.as_secs_f64(),
                "per_second": self.rates,
                "bridges_forwarded_per_second": self.bridge_rates,
            },
            "clients": self.clients["clients"],
            "store": self.store,
            "filters": self.filters,
            "bridges": self.bridges["bridges"],
        })
    }

    /// The human summary.
    pub fn to_text(&self, authority: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tern {} at http://{authority}, up {}",
            self.health["version"].as_str().unwrap_or("?"),
            duration(num(&self.health["uptime_secs"])),
        );
        self.clients_line(&mut out);
        self.rates_line(&mut out);
        self.store_line(&mut out);
        self.filters_section(&mut out);
        self.bridges_section(&mut out);
        out
    }

    fn clients_line(&self, out: &mut String) {
        let clients = list(&self.clients, "clients");
        let connected = clients.iter().filter(|c| c["connected"] == true).count();
        let offline = clients.len() - connected;
        let queued: u64 = clients.iter().map(|c| num(&c["queued"])).sum();
        let _ = writeln!(
            out,
            "\nclients   {connected} connected, {offline} offline sessions, {queued} messages queued"
        );
    }

    fn rates_line(&self, out: &mut String) {
        let rate = |label: &str| self.rates.get(label).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "messages  {:.1}/s in, {:.1}/s out, {:.1}/s dropped ({}/s in, {}/s out)",
            rate("messages_in"),
            rate("messages_out"),
            rate("messages_dropped"),
            bytes(rate("bytes_in")),
            bytes(rate("bytes_out")),
        );
    }

    fn store_line(&self, out: &mut String) {
        let s = &self.store;
        let records = num(&s["records"]);
        let head = num(&s["head_seq"]);
        let next = num(&s["next_seq"]);
        let _ = writeln!(
            out,
            "store     {} in {records} records (log {head}..{next}), limit {}, {:.1} appends/s, \
             {} errors, {} refused",
            bytes(approx(num(&s["bytes"]))),
            bytes(approx(num(&s["max_bytes"]))),
            self.rates.get("store_appends").copied().unwrap_or(0.0),
            num(&s["errors"]),
            num(&s["publishes_refused"]),
        );
    }

    fn filters_section(&self, out: &mut String) {
        let pipelines = list(&self.filters, "pipelines");
        let deploys = &self.filters["deploys"];
        let _ = writeln!(
            out,
            "\nfilters   {} pipelines; deploys {} ok, {} refused",
            pipelines.len(),
            num(&deploys["ok"]),
            num(&deploys["refused"]),
        );
        for pipeline in pipelines {
            let owner = match pipeline["source"].as_str() {
                Some("api") => format!("api {}", pipeline["name"].as_str().unwrap_or("?")),
                Some("config") => format!("config #{}", num(&pipeline["config_index"])),
                _ => String::from("?"),
            };
            let topics: Vec<&str> = list(pipeline, "topics")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let _ = writeln!(
                out,
                "  [{}] {owner}  topics {}  on_failure {}",
                num(&pipeline["index"]),
                topics.join(","),
                pipeline["on_failure"].as_str().unwrap_or("?"),
            );
            for filter in list(pipeline, "filters") {
                let m = &filter["messages"];
                let failures: u64 = filter["failures"]
                    .as_object()
                    .map_or(0, |f| f.values().map(num).sum());
                let _ = writeln!(
                    out,
                    "      {:<16} {} batches, {} in, {} kept, {} dropped, {} routed, {failures} failures",
                    filter["name"].as_str().unwrap_or("?"),
                    num(&filter["batches"]),
                    num(&m["in"]),
                    num(&m["kept"]),
                    num(&m["dropped"]),
                    num(&m["routed"]),
                );
            }
        }
    }

    fn bridges_section(&self, out: &mut String) {
        let bridges = list(&self.bridges, "bridges");
        let _ = writeln!(out, "\nbridges   {}", bridges.len());
        for bridge in bridges {
            let name = bridge["name"].as_str().unwrap_or("?");
            let state = if num(&bridge["connected"]) == 1 {
                "connected"
            } else {
                "disconnected"
            };
            let _ = writeln!(
                out,
                "  {name:<16} {state}, backlog {} ({}, oldest {}), forwarded {} ({:.1}/s), \
                 {} reconnects, {} dropped, last error: {}",
                num(&bridge["backlog"]),
                bytes(approx(num(&bridge["backlog_bytes"]))),
                duration(num(&bridge["oldest_age"])),
                num(&bridge["forwarded"]),
                self.bridge_rates.get(name).copied().unwrap_or(0.0),
                num(&bridge["reconnects"]),
                num(&bridge["dropped"]),
                bridge["last_error"].as_str().unwrap_or("none"),
            );
        }
    }
}

/// `1.5 KiB`, binary units.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2d 3h 4m 5s`, largest units first, zero units left out.
fn duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        String::from("0s")
    } else {
        text.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses() {
        assert_eq!(
            authority_of("http://127.0.0.1:9883").expect("url"),
            "127.0.0.1:9883"
        );
        assert_eq!(
            authority_of("hub.local:80/x").expect("bare"),
            "hub.local:80"
        );
        assert_eq!(
            authority_of("http://[::1]:9883/").expect("v6"),
            "[::1]:9883"
        );
        assert!(authority_of("https://h:1").is_err());
        assert!(authority_of("h").is_err());
        assert!(authority_of("h:port").is_err());
    }

    #[test]
    fn metrics_are_summed_over_their_labels() {
        let parsed = parse_metrics(
            "# HELP tern_x x\n# TYPE tern_x counter\ntern_x 12\ntern_y{a=\"b c\"} 3\n\
             tern_y{a=\"d\"} 4\ntern_z 1.5\n",
        );
        assert_eq!(parsed.get("tern_x"), Some(&12.0));
        assert_eq!(parsed.get("tern_y"), Some(&7.0));
        assert_eq!(parsed.get("tern_z"), Some(&1.5));
        assert_eq!(parsed.len(), 3);
    }

    #[test]
    fn units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
        assert_eq!(duration(3600), "1h");
    }
}
