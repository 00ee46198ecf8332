//! Shared harness for the black-box integration tests.
//!
//! Every test starts its own `tern` process on a free loopback port with its own temporary data
//! directory, so tests run in parallel without sharing state. The harness offers four ways to
//! talk to that process:
//!
//! - [`RawClient`]: a byte-level MQTT client over TCP with a small encoder and decoder of its own,
//!   for tests that need to control or observe every packet (acks withheld, DUP flags, reason
//!   codes, malformed input).
//! - [`V4Client`] / [`V5Client`]: `rumqttc` clients whose event loop runs in a task and forwards
//!   every incoming packet to a channel.
//! - [`mosquitto_pub`] / [`MosquittoSub`]: the mosquitto command-line clients.
//! - [`tern`]: the binary itself, for CLI tests.
//!
//! Every wait is bounded; a test that waits for something that never comes fails with a message
//! that says what it was waiting for, and prints the hub's log.

#![allow(
    dead_code,
    reason = "each integration test binary uses a different subset of the harness"
)]

pub mod cloud;
pub mod guests;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the hub may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the hub may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait for a packet that is expected to arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait used to assert that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(500);

/// Path of the `tern` binary under test: `TERN_TEST_BIN` if set (e.g. a release build or an
/// installed binary), otherwise the one cargo built for this test run.
pub fn tern_bin() -> String {
    std::env::var("TERN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tern").to_string())
}

/// Bound for commands that compile a filter: Cranelift in an unoptimised test build of
/// `tern` takes seconds for the sql92 guest, and longer on a busy machine.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the `tern` binary with `args` and returns its output (bounded by [`EXIT_TIMEOUT`]).
pub fn tern(args: &[&str]) -> Output {
    tern_within(args, EXIT_TIMEOUT)
}

/// [`tern`] bounded by `timeout`.
pub fn tern_within(args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(tern_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern");
    wait_output(child, timeout, "tern")
}

/// Runs `tern serve` on a free loopback port with `config` and the data directory `data`,
/// to completion: for configurations the hub must refuse at start-up.
pub fn serve_to_exit(data: &std::path::Path, config: &std::path::Path) -> Output {
    tern(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.display().to_string(),
        "--config",
        &config.display().to_string(),
    ])
}

/// Waits for `child` to exit within `timeout`, killing it (and failing) otherwise.
pub fn wait_output(child: Child, timeout: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("collect child output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not exit within {timeout:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hub process
// ---------------------------------------------------------------------------------------------

/// A running `tern serve` process with its own data directory.
pub struct Hub {
    /// `None` once the process has been waited for.
    child: Option<Child>,
    addr: SocketAddr,
    /// Extra lines printed on stdout after `listening on`.
    stdout_rest: std_mpsc::Receiver<String>,
    log_path: PathBuf,
    data_dir: PathBuf,
    /// The configuration file, if the hub was started with one (reused by [`Hub::restart`]).
    config_path: Option<PathBuf>,
    /// Dropped last (fields drop after `Drop::drop` kills the child), so the data directory
    /// outlives the process that uses it.
    dir: TempDir,
}

impl Hub {
    /// Starts a hub with the built-in defaults.
    pub fn start() -> Hub {
        Hub::spawn(None)
    }

    /// Starts a hub with `toml` as its configuration file.
    pub fn with_config(toml: &str) -> Hub {
        Hub::spawn(Some(toml))
    }

    /// Starts a hub whose configuration is just a `[session]` table with `session` (TOML
    /// lines).
    pub fn with_session(session: &str) -> Hub {
        let mut toml = String::from("[session]\n");
        toml.push_str(session);
        toml.push('\n');
        Hub::with_config(&toml)
    }

    fn spawn(config: Option<&str>) -> Hub {
        let dir = tempfile::tempdir().expect("create temp dir");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("hub.log");
        let config_path = config.map(|toml| {
            let path = dir.path().join("tern.toml");
            std::fs::write(&path, toml).expect("write config");
            path
        });
        let (child, rx) = Hub::launch(&data_dir, config_path.as_deref(), &log_path);
        let mut hub = Hub {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout_rest: rx,
            log_path,
            data_dir,
            config_path,
            dir,
        };
        hub.wait_listening();
        hub
    }

    /// Spawns `tern serve` on a free port with `data_dir`, appending stderr to `log_path`.
    fn launch(
        data_dir: &Path,
        config_path: Option<&Path>,
        log_path: &Path,
    ) -> (Child, std_mpsc::Receiver<String>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("open log file");
        let mut cmd = Command::new(tern_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir);
        if let Some(path) = config_path {
            cmd.arg("--config").arg(path);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn tern serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Waits for the `listening on ADDR` line and records the address.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_rest.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        self.addr = rest.trim().parse().unwrap_or_else(|e| {
                            panic!("bad address in {line:?}: {e}\n{}", self.logs())
                        });
                        return;
                    }
                }
                Err(_) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    panic!(
                        "hub did not print `listening on ADDR` within {START_TIMEOUT:?} \
                         (exit status: {status:?})\n--- hub log ---\n{}",
                        self.logs()
                    );
                }
            }
        }
    }

    /// Kills the process with SIGKILL (`kill -9 PID`, no chance to flush anything) and
    /// waits for it to be gone.
    pub fn kill_9(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL failed");
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert!(!status.success(), "hub survived SIGKILL: {status}");
    }

    /// Stops the process gracefully (SIGTERM) and requires exit status 0.
    pub fn stop(&mut self) {
        self.terminate();
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "hub exited with {status} after SIGTERM\n--- hub log ---\n{}",
            self.logs()
        );
    }

    /// Starts the hub again on the same data directory and configuration (after
    /// [`Hub::kill_9`] or [`Hub::stop`]); it listens on a new free port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running hub");
        let (child, rx) = Hub::launch(&self.data_dir, self.config_path.as_deref(), &self.log_path);
        self.child = Some(child);
        self.stdout_rest = rx;
        self.wait_listening();
    }

    /// The bound listener address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the configuration file the hub was started with (for reload tests).
    pub fn rewrite_config(&self, toml: &str) {
        let path = self
            .config_path
            .as_ref()
            .expect("the hub was started with a configuration file");
        // Written whole then renamed, so a reload never reads a half-written file.
        let tmp = path.with_extension("toml.new");
        std::fs::write(&tmp, toml).expect("write config");
        std::fs::rename(&tmp, path).expect("replace config");
    }

    /// Sends SIGHUP (reload the configuration's pipelines).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Waits until the hub's log contains `needle` (bounded by [`RECV_TIMEOUT`] × 2).
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + 2 * RECV_TIMEOUT;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "log never contained {needle:?}\n--- hub log ---\n{}",
            self.logs()
        );
    }

    /// The admin API address of the hub's latest start, from the last `admin API listening
    /// addr=...` log line (waits for the first).
    pub fn admin_addr(&self) -> SocketAddr {
        self.wait_log("admin API listening");
        let logs = self.logs();
        let line = logs
            .lines()
            .rfind(|l| l.contains("admin API listening"))
            .expect("log line present");
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the data dir, the log and the config file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the hub wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("hub already exited").id()
    }

    /// Sends SIGTERM (without waiting).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit within `timeout`; kills it and fails otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("hub already exited");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for hub") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "hub did not exit within {timeout:?}\n--- hub log ---\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Graceful shutdown: SIGTERM, then asserts exit status 0 and that no hub task panicked.
    pub fn finish(mut self) {
        assert!(
            self.is_running(),
            "hub exited early\n--- hub log ---\n{}",
            self.logs()
        );
        self.stop_within(EXIT_TIMEOUT);
    }

    /// SIGTERM, then asserts exit status 0 within `bound` and that no hub task panicked.
    pub fn stop_within(&mut self, bound: Duration) {
        self.terminate();
        let status = self.wait_exit(bound);
        let logs = self.logs();
        assert!(
            status.success(),
            "hub exited with {status} after SIGTERM\n--- hub log ---\n{logs}"
        );
        // A panicking connection task does not stop the process; the log is where it shows.
        assert!(
            !logs.contains("panicked at"),
            "a hub task panicked\n--- hub log ---\n{logs}"
        );
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!(
                "--- hub log ({}) ---\n{}",
                self.log_path.display(),
                self.logs()
            );
        }
        if let Some(child) = self.child.as_mut() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw MQTT client: encoder
// ---------------------------------------------------------------------------------------------

/// MQTT 3.1.1 protocol level.
pub const V311: u8 = 4;
/// MQTT 5.0 protocol level.
pub const V5: u8 = 5;

/// Property identifiers (MQTT 5.0 §2.2.2.2).
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUB_AVAILABLE: u8 = 0x2A;
}

/// Appends a variable byte integer.
pub fn put_varint(buf: &mut Vec<u8>, mut value: u32) {
    loop {
        let mut byte = u8::try_from(value % 128).expect("value % 128 fits in u8");
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if value == 0 {
            break;
        }
    }
}

pub fn put_u16(buf: &mut Vec<u8>, value: u16) {
    buf.extend_from_slice(&value.to_be_bytes());
}

/// Appends a length-prefixed string or binary field.
pub fn put_bin(buf: &mut Vec<u8>, data: &[u8]) {
    put_u16(
        buf,
        u16::try_from(data.len()).expect("field longer than 65535 bytes"),
    );
    buf.extend_from_slice(data);
}

pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bin(buf, s.as_bytes());
}

/// Builds a whole packet: fixed header byte, remaining length, body.
pub fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    put_varint(&mut out, u32::try_from(body.len()).expect("body too large"));
    out.extend_from_slice(body);
    out
}

/// An MQTT 5.0 property list under construction (without its length prefix).
#[derive(Clone, Debug, Default)]
pub struct Props(pub Vec<u8>);

impl Props {
    pub fn new() -> Props {
        Props::default()
    }
    pub fn byte(mut self, id: u8, v: u8) -> Props {
        self.0.push(id);
        self.0.push(v);
        self
    }
    pub fn u16(mut self, id: u8, v: u16) -> Props {
        self.0.push(id);
        put_u16(&mut self.0, v);
        self
    }
    pub fn u32(mut self, id: u8, v: u32) -> Props {
        self.0.push(id);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn varint(mut self, id: u8, v: u32) -> Props {
        self.0.push(id);
        put_varint(&mut self.0, v);
        self
    }
    pub fn str(mut self, id: u8, v: &str) -> Props {
        self.0.push(id);
        put_str(&mut self.0, v);
        self
    }
    pub fn bin(mut self, id: u8, v: &[u8]) -> Props {
        self.0.push(id);
        put_bin(&mut self.0, v);
        self
    }
    pub fn user(mut self, k: &str, v: &str) -> Props {
        self.0.push(prop::USER_PROPERTY);
        put_str(&mut self.0, k);
        put_str(&mut self.0, v);
        self
    }
    /// Appends the property length and the properties to `buf`.
    pub fn write(&self, buf: &mut Vec<u8>) {
        put_varint(
            buf,
            u32::try_from(self.0.len()).expect("properties too long"),
        );
        buf.extend_from_slice(&self.0);
    }
}

/// A will message for [`Connect`].
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Props,
}

impl Will {
    pub fn new(topic: &str, payload: &[u8]) -> Will {
        Will {
            topic: topic.into(),
            payload: payload.into(),
            qos: 0,
            retain: false,
            props: Props::new(),
        }
    }
}

/// A CONNECT packet.
#[derive(Clone, Debug)]
pub struct Connect {
    pub level: u8,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub props: Props,
}

impl Connect {
    /// MQTT 3.1.1 CONNECT with clean session and a 60 s keepalive.
    pub fn v4(client_id: &str) -> Connect {
        Connect {
            level: V311,
            client_id: client_id.into(),
            clean: true,
            keep_alive: 60,
            will: None,
            username: None,
            password: None,
            props: Props::new(),
        }
    }
    /// MQTT 5.0 CONNECT with clean start and a 60 s keepalive.
    pub fn v5(client_id: &str) -> Connect {
        Connect {
            level: V5,
            ..Connect::v4(client_id)
        }
    }
    pub fn clean(mut self, clean: bool) -> Connect {
        self.clean = clean;
        self
    }
    pub fn keep_alive(mut self, secs: u16) -> Connect {
        self.keep_alive = secs;
        self
    }
    pub fn will(mut self, will: Will) -> Connect {
        self.will = Some(will);
        self
    }
    pub fn props(mut self, props: Props) -> Connect {
        self.props = props;
        self
    }
    /// Session Expiry Interval property (v5).
    pub fn session_expiry(self, secs: u32) -> Connect {
        let props = self.props.clone().u32(prop::SESSION_EXPIRY, secs);
        self.props(props)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, if self.level == 3 { "MQIsdp" } else { "MQTT" });
        body.push(self.level);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.push(flags);
        put_u16(&mut body, self.keep_alive);
        if self.level == V5 {
            self.props.write(&mut body);
        }
        put_str(&mut body, &self.client_id);
        if let Some(will) = &self.will {
            if self.level == V5 {
                will.props.write(&mut body);
            }
            put_str(&mut body, &will.topic);
            put_bin(&mut body, &will.payload);
        }
        if let Some(user) = &self.username {
            put_str(&mut body, user);
        }
        if let Some(pass) = &self.password {
            put_bin(&mut body, pass);
        }
        packet(0x10, &body)
    }
}

/// An outgoing PUBLISH.
#[derive(Clone, Debug)]
pub struct Pub {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pid: u16,
    pub props: Props,
}

impl Pub {
    pub fn new(topic: &str, payload: &[u8]) -> Pub {
        Pub {
            topic: topic.into(),
            payload: payload.into(),
            qos: 0,
            retain: false,
            dup: false,
            pid: 0,
            props: Props::new(),
        }
    }
    /// Sets QoS; QoS > 0 needs a packet id (`pid`).
    pub fn qos(mut self, qos: u8, pid: u16) -> Pub {
        self.qos = qos;
        self.pid = pid;
        self
    }
    pub fn retain(mut self, retain: bool) -> Pub {
        self.retain = retain;
        self
    }
    pub fn props(mut self, props: Props) -> Pub {
        self.props = props;
        self
    }
    pub fn encode(&self, level: u8) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, &self.topic);
        if self.qos > 0 {
            put_u16(&mut body, self.pid);
        }
        if level == V5 {
            self.props.write(&mut body);
        }
        body.extend_from_slice(&self.payload);
        let first = 0x30 | (u8::from(self.dup) << 3) | (self.qos << 1) | u8::from(self.retain);
        packet(first, &body)
    }
}

/// SUBSCRIBE option byte: QoS plus v5 flags.
pub fn sub_opts(qos: u8, no_local: bool, retain_as_published: bool, retain_handling: u8) -> u8 {
    qos | (u8::from(no_local) << 2) | (u8::from(retain_as_published) << 3) | (retain_handling << 4)
}

pub fn subscribe_packet(level: u8, pid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, pid);
    if level == V5 {
        props.write(&mut body);
    }
    for (filter, opts) in filters {
        put_str(&mut body, filter);
        body.push(*opts);
    }
    packet(0x82, &body)
}

pub fn unsubscribe_packet(level: u8, pid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, pid);
    if level == V5 {
        body.push(0);
    }
    for filter in filters {
        put_str(&mut body, filter);
    }
    packet(0xA2, &body)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70) with reason Success.
pub fn ack_packet(first_byte: u8, pid: u16) -> Vec<u8> {
    packet(first_byte, &pid.to_be_bytes())
}

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// DISCONNECT with reason 0 (both versions).
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// v5 DISCONNECT with a reason code and properties.
pub fn disconnect_v5(reason: u8, props: &Props) -> Vec<u8> {
    let mut body = vec![reason];
    props.write(&mut body);
    packet(0xE0, &body)
}

// ---------------------------------------------------------------------------------------------
// Raw MQTT client: decoder
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropValue {
    Byte(u8),
    U16(u16),
    U32(u32),
    Varint(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// Decoded MQTT 5.0 properties, in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<(u8, PropValue)>);

impl Properties {
    pub fn get(&self, id: u8) -> Option<&PropValue> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }
    pub fn count(&self, id: u8) -> usize {
        self.0.iter().filter(|(i, _)| *i == id).count()
    }
    pub fn u32(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            PropValue::U32(v) | PropValue::Varint(v) => Some(*v),
            PropValue::U16(v) => Some(u32::from(*v)),
            PropValue::Byte(v) => Some(u32::from(*v)),
            _ => None,
        }
    }
    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            PropValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn bin(&self, id: u8) -> Option<&[u8]> {
        match self.get(id)? {
            PropValue::Bin(b) => Some(b),
            _ => None,
        }
    }
    pub fn user(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(_, v)| match v {
                PropValue::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
    pub fn subscription_ids(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(i, _)| *i == prop::SUBSCRIPTION_ID)
            .filter_map(|(_, v)| match v {
                PropValue::Varint(v) => Some(*v),
                _ => None,
            })
            .collect()
    }
}

/// A received PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub pid: u16,
    pub props: Properties,
    pub payload: Vec<u8>,
}

/// A packet received from the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    ConnAck {
        session_present: bool,
        code: u8,
        props: Properties,
    },
    Publish(Publish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP; `kind` is the packet type (4..=7).
    Ack {
        kind: u8,
        pid: u16,
        reason: u8,
        props: Properties,
    },
    SubAck {
        pid: u16,
        codes: Vec<u8>,
        props: Properties,
    },
    UnsubAck {
        pid: u16,
        codes: Vec<u8>,
        props: Properties,
    },
    PingResp,
    Disconnect {
        reason: u8,
        props: Properties,
    },
    Other {
        first_byte: u8,
        body: Vec<u8>,
    },
}

pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;

/// Byte cursor used by the decoder; every read fails cleanly on truncated input.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn varint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21] {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("variable byte integer longer than 4 bytes".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }
    fn bin(&mut self) -> Result<Vec<u8>, String> {
        let n = usize::from(self.u16()?);
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, String> {
        String::from_utf8(self.bin()?).map_err(|e| e.to_string())
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        s
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    fn props(&mut self) -> Result<Properties, String> {
        let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
        let mut inner = Cur {
            buf: self.take(len)?,
            pos: 0,
        };
        let mut out = Vec::new();
        while inner.remaining() > 0 {
            let id = inner.u8()?;
            let v = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    PropValue::Byte(inner.u8()?)
                }
                0x13 | 0x21 | 0x22 | 0x23 => PropValue::U16(inner.u16()?),
                0x02 | 0x11 | 0x18 | 0x27 => PropValue::U32(inner.u32()?),
                0x0B => PropValue::Varint(inner.varint()?),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => PropValue::Str(inner.str()?),
                0x09 | 0x16 => PropValue::Bin(inner.bin()?),
                0x26 => PropValue::Pair(inner.str()?, inner.str()?),
                other => return Err(format!("unknown property id {other:#04x}")),
            };
            out.push((id, v));
        }
        Ok(Properties(out))
    }
}

/// Decodes one packet body. `level` selects the 3.1.1 or 5.0 layout.
pub fn decode(first_byte: u8, body: &[u8], level: u8) -> Result<Incoming, String> {
    let v5 = level == V5;
    let mut c = Cur { buf: body, pos: 0 };
    let kind = first_byte >> 4;
    let p = match kind {
        2 => {
            let flags = c.u8()?;
            let code = c.u8()?;
            let props = if v5 && c.remaining() > 0 {
                c.props()?
            } else {
                Properties::default()
            };
            Incoming::ConnAck {
                session_present: flags & 1 == 1,
                code,
                props,
            }
        }
        3 => {
            let qos = (first_byte >> 1) & 3;
            let topic = c.str()?;
            let pid = if qos > 0 { c.u16()? } else { 0 };
            let props = if v5 {
                c.props()?
            } else {
                Properties::default()
            };
            Incoming::Publish(Publish {
                dup: first_byte & 0x08 != 0,
                qos,
                retain: first_byte & 1 == 1,
                topic,
                pid,
                props,
                payload: c.rest().to_vec(),
            })
        }
        4..=7 => {
            let pid = c.u16()?;
            let reason = if c.remaining() > 0 { c.u8()? } else { 0 };
            let props = if c.remaining() > 0 {
                c.props()?
            } else {
                Properties::default()
            };
            Incoming::Ack {
                kind,
                pid,
                reason,
                props,
            }
        }
        9 | 11 => {
            let pid = c.u16()?;
            let props = if v5 {
                c.props()?
            } else {
                Properties::default()
            };
            let codes = c.rest().to_vec();
            if kind == 9 {
                Incoming::SubAck { pid, codes, props }
            } else {
                Incoming::UnsubAck { pid, codes, props }
            }
        }
        13 => Incoming::PingResp,
        14 => {
            let reason = if c.remaining() > 0 { c.u8()? } else { 0 };
            let props = if c.remaining() > 0 {
                c.props()?
            } else {
                Properties::default()
            };
            Incoming::Disconnect { reason, props }
        }
        _ => Incoming::Other {
            first_byte,
            body: body.to_vec(),
        },
    };
    Ok(p)
}

/// Why [`RawClient::try_recv`] returned no packet.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvError {
    Timeout,
    /// The hub closed the connection (EOF or reset).
    Closed,
}

/// A byte-level MQTT client.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    backlog: VecDeque<Incoming>,
    /// Protocol level used to decode incoming packets (set by [`RawClient::connect`]).
    pub level: u8,
    next_pid: u16,
    closed: bool,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn tcp(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(RECV_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            backlog: VecDeque::new(),
            level: V311,
            next_pid: 0,
            closed: false,
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (RawClient, Incoming) {
        let mut c = RawClient::tcp(addr).await;
        c.level = connect.level;
        c.send(&connect.encode()).await;
        let ack = c.recv().await;
        assert!(
            matches!(ack, Incoming::ConnAck { .. }),
            "expected CONNACK, got {ack:?}"
        );
        (c, ack)
    }

    /// Opens a connection and sends `connect`; `None` when the hub is gone before it answers
    /// with a successful CONNACK (for clients racing a `kill -9`).
    pub async fn try_connect(addr: SocketAddr, connect: Connect) -> Option<RawClient> {
        let stream = tokio::time::timeout(RECV_TIMEOUT, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        stream.set_nodelay(true).ok()?;
        let mut c = RawClient {
            stream,
            buf: Vec::new(),
            backlog: VecDeque::new(),
            level: connect.level,
            next_pid: 0,
            closed: false,
        };
        if !c.try_send(&connect.encode()).await {
            return None;
        }
        match c.try_recv(RECV_TIMEOUT).await {
            Ok(Incoming::ConnAck { code: 0, .. }) => Some(c),
            _ => None,
        }
    }

    /// Connects and asserts the CONNACK reports success; returns `session_present`.
    pub async fn connect_ok(addr: SocketAddr, connect: Connect) -> (RawClient, bool) {
        let (c, ack) = RawClient::connect(addr, connect).await;
        match ack {
            Incoming::ConnAck {
                code: 0,
                session_present,
                ..
            } => (c, session_present),
            other => panic!("connection refused: {other:?}"),
        }
    }

    /// Returns a fresh non-zero packet id.
    pub fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.wrapping_add(1).max(1);
        self.next_pid
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to hub");
    }

    /// Writes and reports whether the write succeeded (the hub may already have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Receives the next packet within `timeout`.
    pub async fn try_recv(&mut self, timeout: Duration) -> Result<Incoming, RecvError> {
        if let Some(p) = self.backlog.pop_front() {
            return Ok(p);
        }
        if self.closed {
            return Err(RecvError::Closed);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((first, body, used)) = split_packet(&self.buf) {
                self.buf.drain(..used);
                return Ok(decode(first, &body, self.level).unwrap_or_else(|e| {
                    panic!("hub sent an undecodable packet {first:#04x}: {e}")
                }));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(RecvError::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = true;
                    return Err(RecvError::Closed);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Receives the next packet, failing the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Incoming {
        match self.try_recv(RECV_TIMEOUT).await {
            Ok(p) => p,
            Err(e) => panic!("expected a packet from the hub, got {e:?}"),
        }
    }

    /// Receives packets until one matches `pick`; others are kept for later `recv` calls.
    pub async fn recv_matching<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Incoming) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Ok(p) => match pick(&p) {
                    Some(t) => break t,
                    None => skipped.push(p),
                },
                Err(e) => panic!("waiting for {what}: {e:?}; received meanwhile: {skipped:?}"),
            }
        };
        for p in skipped.into_iter().rev() {
            self.backlog.push_front(p);
        }
        found
    }

    /// Receives the next PUBLISH (other packets are kept).
    pub async fn recv_publish(&mut self) -> Publish {
        self.recv_matching("PUBLISH", |p| match p {
            Incoming::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Returns the next PUBLISH arriving within `timeout`, if any (other packets are kept).
    pub async fn try_recv_publish(&mut self, timeout: Duration) -> Option<Publish> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Ok(Incoming::Publish(p)) => break Some(p),
                Ok(other) => skipped.push(other),
                Err(_) => break None,
            }
        };
        for p in skipped.into_iter().rev() {
            self.backlog.push_front(p);
        }
        found
    }

    /// Asserts that no packet at all arrives for `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        match self.try_recv(dur).await {
            Err(RecvError::Timeout) => {}
            other => panic!("expected no packet for {dur:?}, got {other:?}"),
        }
    }

    /// Asserts that no PUBLISH arrives for `dur`.
    pub async fn expect_no_publish(&mut self, dur: Duration) {
        if let Some(p) = self.try_recv_publish(dur).await {
            panic!("expected no PUBLISH for {dur:?}, got {p:?}");
        }
    }

    /// Waits until the hub closes the connection; returns the packets received before the
    /// close (typically a DISCONNECT or a CONNACK with an error code).
    pub async fn expect_closed(&mut self, timeout: Duration) -> Vec<Incoming> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Ok(p) => got.push(p),
                Err(RecvError::Closed) => return got,
                Err(RecvError::Timeout) => {
                    panic!("hub kept the connection open for {timeout:?}; received {got:?}")
                }
            }
        }
    }

    /// Subscribes and returns the SUBACK return/reason codes.
    pub async fn subscribe_with(&mut self, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
        let pid = self.pid();
        let bytes = subscribe_packet(self.level, pid, filters, props);
        self.send(&bytes).await;
        self.recv_matching("SUBACK", |p| match p {
            Incoming::SubAck {
                pid: got, codes, ..
            } if *got == pid => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes to one filter with plain QoS options and asserts the grant.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) {
        let codes = self.subscribe_with(&[(filter, qos)], &Props::new()).await;
        assert_eq!(codes, vec![qos], "SUBACK for {filter} at QoS {qos}");
    }

    pub async fn unsubscribe(&mut self, filter: &str) -> Vec<u8> {
        let pid = self.pid();
        let bytes = unsubscribe_packet(self.level, pid, &[filter]);
        self.send(&bytes).await;
        self.recv_matching("UNSUBACK", |p| match p {
            Incoming::UnsubAck {
                pid: got, codes, ..
            } if *got == pid => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Sends a PUBLISH and completes its QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    /// Returns the reason code of the final ack (0 for QoS 0).
    pub async fn publish(&mut self, mut p: Pub) -> u8 {
        if p.qos > 0 && p.pid == 0 {
            p.pid = self.pid();
        }
        let level = self.level;
        self.send(&p.encode(level)).await;
        let pid = p.pid;
        match p.qos {
            0 => 0,
            1 => self.expect_ack(PUBACK, pid).await,
            _ => {
                let rec = self.expect_ack(PUBREC, pid).await;
                if rec >= 0x80 {
                    return rec;
                }
                self.send(&ack_packet(0x62, pid)).await;
                self.expect_ack(PUBCOMP, pid).await
            }
        }
    }

    /// Waits for an ack of `kind` for `pid` and returns its reason code.
    pub async fn expect_ack(&mut self, kind: u8, pid: u16) -> u8 {
        self.recv_matching(
            &format!("ack type {kind} for packet id {pid}"),
            |p| match p {
                Incoming::Ack {
                    kind: k,
                    pid: got,
                    reason,
                    ..
                } if *k == kind && *got == pid => Some(*reason),
                _ => None,
            },
        )
        .await
    }

    /// Acknowledges a received PUBLISH according to its QoS (QoS 2: PUBREC, waits for
    /// PUBREL, sends PUBCOMP).
    pub async fn ack(&mut self, p: &Publish) {
        match p.qos {
            0 => {}
            1 => self.send(&ack_packet(0x40, p.pid)).await,
            _ => {
                self.send(&ack_packet(0x50, p.pid)).await;
                self.expect_ack(PUBREL, p.pid).await;
                self.send(&ack_packet(0x70, p.pid)).await;
            }
        }
    }

    /// Receives a PUBLISH and acknowledges it.
    pub async fn recv_publish_acked(&mut self) -> Publish {
        let p = self.recv_publish().await;
        self.ack(&p).await;
        p
    }

    /// Sends DISCONNECT (reason 0), closes the sending side and waits (bounded) until the hub
    /// closes too, so the hub has processed the DISCONNECT when this returns.
    pub async fn disconnect(mut self) {
        self.send(&DISCONNECT).await;
        let _ = self.stream.shutdown().await;
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        let mut chunk = [0u8; 256];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await
        {
            if n == 0 {
                break;
            }
        }
    }

    /// Closes the TCP connection without DISCONNECT (an abnormal close).
    pub async fn drop_connection(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Splits one complete packet off the front of `buf`: (first byte, body, bytes used).
fn split_packet(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let first = *buf.first()?;
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        len |= usize::from(b & 0x7F) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        assert!(i <= 4, "hub sent a remaining length longer than 4 bytes");
    }
    let end = i + len;
    let body = buf.get(i..end)?.to_vec();
    Some((first, body, end))
}

// ---------------------------------------------------------------------------------------------
// $SYS counters
// ---------------------------------------------------------------------------------------------

/// Subscribes a fresh client to `topic` (a `$SYS` counter) and waits until its value satisfies
/// `ok`, or `timeout` passes. Returns the last value seen.
pub async fn wait_sys_counter(
    hub: &Hub,
    topic: &str,
    timeout: Duration,
    ok: impl Fn(u64) -> bool,
) -> Option<u64> {
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("")).await;
    c.subscribe(topic, 0).await;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(p) = c.try_recv_publish(left).await else {
            return last;
        };
        if p.topic != topic {
            continue;
        }
        let text = String::from_utf8_lossy(&p.payload);
        let value: u64 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{topic} = {text:?}"));
        last = Some(value);
        if ok(value) {
            return last;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc clients
// ---------------------------------------------------------------------------------------------

/// An MQTT 3.1.1 client (rumqttc) whose event loop runs in a task.
pub struct V4Client {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<rumqttc::Packet>,
    task: JoinHandle<()>,
    pub connack: rumqttc::ConnAck,
}

impl V4Client {
    /// Connects with clean session and waits for the CONNACK.
    pub async fn connect(hub: &Hub, id: &str) -> V4Client {
        V4Client::connect_with(hub, id, |_| {}).await
    }

    pub async fn connect_with(
        hub: &Hub,
        id: &str,
        configure: impl FnOnce(&mut rumqttc::MqttOptions),
    ) -> V4Client {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", hub.port());
        opts.set_keep_alive(Duration::from_secs(30));
        configure(&mut opts);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(_)) => {}
                    // No automatic reconnect: tests see the closed channel instead.
                    Err(_) => return,
                }
            }
        });
        let connack = match tokio::time::timeout(RECV_TIMEOUT, rx.recv()).await {
            Ok(Some(rumqttc::Packet::ConnAck(ack))) => ack,
            other => panic!("rumqttc v4 {id}: expected CONNACK, got {other:?}"),
        };
        V4Client {
            client,
            rx,
            task,
            connack,
        }
    }

    /// Next incoming packet of any kind, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<rumqttc::Packet> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Subscribes and waits for the SUBACK; call it on a quiet client (anything arriving before
    /// the SUBACK fails the test).
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> rumqttc::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        match self.next(RECV_TIMEOUT).await {
            Some(rumqttc::Packet::SubAck(ack)) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Next PUBLISH within `timeout`, skipping acks and other control packets.
    pub async fn recv_publish(&mut self, timeout: Duration) -> Option<rumqttc::Publish> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(rumqttc::Packet::Publish(p))) => return Some(p),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Waits for the ack of an outgoing QoS 1/2 publish (PUBACK or PUBCOMP).
    pub async fn wait_publish_done(&mut self) {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_))) => return,
                Ok(Some(_)) => {}
                other => panic!("waiting for PUBACK/PUBCOMP: {other:?}"),
            }
        }
    }

    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(RECV_TIMEOUT, &mut self.task).await;
    }
}

impl Drop for V4Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An MQTT 5.0 client (rumqttc v5) whose event loop runs in a task.
pub struct V5Client {
    pub client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<rumqttc::v5::Incoming>,
    task: JoinHandle<()>,
    pub connack: rumqttc::v5::mqttbytes::v5::ConnAck,
}

impl V5Client {
    pub async fn connect(hub: &Hub, id: &str) -> V5Client {
        V5Client::connect_with(hub, id, |_| {}).await
    }

    pub async fn connect_with(
        hub: &Hub,
        id: &str,
        configure: impl FnOnce(&mut rumqttc::v5::MqttOptions),
    ) -> V5Client {
        let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", hub.port());
        opts.set_keep_alive(Duration::from_secs(30));
        configure(&mut opts);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 64);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::v5::Event::Outgoing(_)) => {}
                    Err(_) => return,
                }
            }
        });
        let connack = match tokio::time::timeout(RECV_TIMEOUT, rx.recv()).await {
            Ok(Some(rumqttc::v5::Incoming::ConnAck(ack))) => ack,
            other => panic!("rumqttc v5 {id}: expected CONNACK, got {other:?}"),
        };
        V5Client {
            client,
            rx,
            task,
            connack,
        }
    }

    pub async fn next(&mut self, timeout: Duration) -> Option<rumqttc::v5::Incoming> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: rumqttc::v5::mqttbytes::QoS,
    ) -> rumqttc::v5::mqttbytes::v5::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        self.wait_suback().await
    }

    pub async fn wait_suback(&mut self) -> rumqttc::v5::mqttbytes::v5::SubAck {
        match self.next(RECV_TIMEOUT).await {
            Some(rumqttc::v5::Incoming::SubAck(ack)) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn recv_publish(
        &mut self,
        timeout: Duration,
    ) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(rumqttc::v5::Incoming::Publish(p))) => return Some(p),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    pub async fn wait_publish_done(&mut self) {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(rumqttc::v5::Incoming::PubAck(_) | rumqttc::v5::Incoming::PubComp(_))) => {
                    return;
                }
                Ok(Some(_)) => {}
                other => panic!("waiting for PUBACK/PUBCOMP: {other:?}"),
            }
        }
    }

    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(RECV_TIMEOUT, &mut self.task).await;
    }
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// mosquitto command-line clients
// ---------------------------------------------------------------------------------------------

/// `-V` value for a protocol level.
fn mosquitto_version(level: u8) -> &'static str {
    if level == V5 { "mqttv5" } else { "mqttv311" }
}

/// Runs `mosquitto_pub` against the hub and asserts it succeeded.
pub fn mosquitto_pub(hub: &Hub, level: u8, topic: &str, payload: &str, qos: u8, extra: &[&str]) {
    let child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &hub.port().to_string()])
        .args(["-V", mosquitto_version(level), "-t", topic, "-m", payload])
        .args(["-q", &qos.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_pub (install mosquitto-clients, or run `cargo xtask test`)");
    let out = wait_output(child, Duration::from_secs(10), "mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.logs()
    );
}

/// A message printed by `mosquitto_sub -F '%r %q %t %p'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubLine {
    pub retain: bool,
    pub qos: u8,
    pub topic: String,
    pub payload: String,
}

/// A running `mosquitto_sub`, already subscribed (its SUBACK was seen).
pub struct MosquittoSub {
    child: Option<Child>,
    lines: std_mpsc::Receiver<String>,
}

impl MosquittoSub {
    /// Starts `mosquitto_sub` for `count` messages with an overall limit of `secs` seconds
    /// (`-C`, `-W`), and waits until the hub has acknowledged the subscription.
    pub fn start(
        hub: &Hub,
        level: u8,
        topic: &str,
        qos: u8,
        count: u32,
        secs: u32,
    ) -> MosquittoSub {
        // mosquitto_sub's debug lines are block-buffered on a pipe; stdbuf makes them
        // line-buffered so the SUBACK line arrives when it happens.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &hub.port().to_string()])
            .args([
                "-V",
                mosquitto_version(level),
                "-t",
                topic,
                "-q",
                &qos.to_string(),
            ])
            .args(["-C", &count.to_string(), "-W", &secs.to_string()])
            .args(["-d", "-F", "%r %q %t %p"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub (install mosquitto-clients, or run `cargo xtask test`)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sub = MosquittoSub {
            child: Some(child),
            lines: rx,
        };
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match sub.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("Subscribed") => return sub,
                Ok(_) => {}
                Err(_) => panic!("mosquitto_sub did not get a SUBACK\n{}", hub.logs()),
            }
        }
    }

    /// Waits for the process to exit (it does after `count` messages or `secs` seconds) and
    /// returns the messages it printed.
    pub fn messages(mut self) -> Vec<SubLine> {
        let child = self.child.take().expect("child");
        let out = wait_output(child, Duration::from_secs(30), "mosquitto_sub");
        drop(out);
        let mut msgs = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            if line.starts_with("Client ") || line.starts_with("Subscribed") {
                continue;
            }
            let mut parts = line.splitn(4, ' ');
            let (Some(r), Some(q), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            msgs.push(SubLine {
                retain: r == "1",
                qos: q.parse().unwrap_or(255),
                topic: t.to_string(),
                payload: parts.next().unwrap_or("").to_string(),
            });
        }
        msgs
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A unique-enough suffix for topics and client ids inside one test.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes a configuration file at `path` with only an `[admin]` section: `bind` and
/// `token_file`.
pub fn write_admin_config(path: &Path, bind: &str, token_file: &Path) {
    std::fs::write(
        path,
        format!(
            "[admin]\nbind = \"{bind}\"\ntoken_file = {}\n",
            guests::toml_path(token_file)
        ),
    )
    .expect("write config");
}

// ---------------------------------------------------------------------------------------------
// A mosquitto broker (the upstream of bridge tests)
// ---------------------------------------------------------------------------------------------

/// A `mosquitto` broker on a free loopback port, with its own directory (configuration,
/// persistence file, log). Sessions and queued messages persist across [`Mosquitto::stop`] /
/// [`Mosquitto::restart`] (SIGTERM saves them), and the port stays the same.
pub struct Mosquitto {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
    log_path: PathBuf,
    /// Dropped after the process is killed.
    dir: TempDir,
}

/// How long mosquitto may take to accept connections after it was started.
pub const MOSQUITTO_START: Duration = Duration::from_secs(10);

impl Mosquitto {
    /// Starts a plain TCP broker accepting anonymous clients.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    /// Starts a broker whose listener gets the extra configuration `listener_conf` (e.g.
    /// `cafile` / `certfile` / `keyfile` lines for TLS); files it names may live in
    /// [`Mosquitto::dir`], which `write_files` fills first.
    pub fn start_with_files(
        write_files: impl FnOnce(&Path),
        listener_conf: impl FnOnce(&Path) -> String,
    ) -> Mosquitto {
        let dir = tempfile::tempdir().expect("create mosquitto dir");
        write_files(dir.path());
        let extra = listener_conf(dir.path());
        Mosquitto::launch_new(dir, &extra)
    }

    /// [`Mosquitto::start_with_files`] without files.
    pub fn start_with(listener_conf: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("create mosquitto dir");
        Mosquitto::launch_new(dir, listener_conf)
    }

    fn launch_new(dir: TempDir, extra: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let log_path = dir.path().join("mosquitto.log");
        // `user root`: started as root, mosquitto would switch to its own user and could
        // not write its persistence file in our directory (ignored when not root).
        let text = format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n\
             persistence true\npersistence_location {}/\nautosave_interval 0\n\
             max_queued_messages 0\nmax_inflight_messages 100\n\
             log_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n",
            dir.path().display(),
            log_path.display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
            log_path,
            dir,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto (is it installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + MOSQUITTO_START;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mosquitto exited at start: {status}\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within {MOSQUITTO_START:?}\n{}",
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the broker process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the broker with SIGTERM (it saves its sessions) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if child.try_wait().expect("wait for mosquitto").is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not exit within {EXIT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the stopped broker again on the same port with the same state.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running mosquitto");
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
