//! `cargo xtask footprint`: memory of a running hub, idle and with many idle clients.
//!
//! Starts the `dist` build of `tern` for the host on a free loopback port with a fresh data
//! directory, opens MQTT 3.1.1 connections in steps (CONNECT, CONNACK, then silence within
//! the keep alive), and after each step reads the hub's `VmRSS`, `VmHWM`, thread and file
//! descriptor counts from `/proc`. The hub is stopped by its PID (SIGTERM, then SIGKILL if
//! it has not exited after [`STOP_GRACE`]) and the data directory removed.
//!
//! Every client is one file descriptor here and one in the hub, so the run raises this
//! process's `RLIMIT_NOFILE` soft limit (the hub inherits it) and fails, naming the limit,
//! when the hard limit is too low. Bounded: at most [`MAX_CLIENTS`] clients and
//! [`RUN_DEADLINE`] for the whole run. Linux only (`/proc`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rustix::process::{Pid, Resource, Rlimit, Signal};

use crate::dist::{human, target_dir};
use crate::{Steps, cargo, host_triple};

/// Client counts measured when none are given.
const DEFAULT_STEPS: [usize; 2] = [1_000, 10_000];
/// Largest client count accepted.
const MAX_CLIENTS: usize = 50_000;
/// Descriptors needed besides the clients' (listeners, store, journal, runtime, stdio).
const FD_HEADROOM: u64 = 256;
/// Keep alive the clients announce: far longer than a run, so they never need to ping.
const KEEP_ALIVE_SECS: u16 = 900;
/// Bound on the whole run, also well inside 1.5 x the keep alive.
const RUN_DEADLINE: Duration = Duration::from_secs(600);
/// How long the hub may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client waits for its CONNACK.
const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after each step before reading `/proc`, so connection set-up work has finished.
const SETTLE: Duration = Duration::from_secs(2);
/// Time the hub gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Command-line options of `cargo xtask footprint`.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// `--clients 1000,10000`: ascending client counts; default [`DEFAULT_STEPS`].
    pub(crate) clients: Option<String>,
    /// `--binary PATH`: measure this `tern` instead of building the host `dist` one.
    pub(crate) binary: Option<PathBuf>,
}

/// `cargo xtask footprint [--clients N,N..] [--binary PATH]`.
pub(crate) fn footprint(root: &Path, options: &Options, steps: &mut Steps) -> Result<()> {
    let counts = match &options.clients {
        None => DEFAULT_STEPS.to_vec(),
        Some(list) => parse_counts(list)?,
    };
    let most = counts.last().copied().unwrap_or(0);
    let host = host_triple()?;
    let binary = match &options.binary {
        Some(binary) => binary.clone(),
        None => {
            steps.run(
                "footprint: build tern (dist profile)",
                cargo(root).args([
                    "build",
                    "--locked",
                    "-p",
                    "tern-hub",
                    "--bin",
                    "tern",
                    "--profile",
                    "dist",
                    "--target",
                    &host,
                ]),
            )?;
            target_dir(root).join(&host).join("dist").join("tern")
        }
    };
    let limit = steps.step("footprint: file descriptor limit", || {
        raise_nofile(u64::try_from(most).unwrap_or(u64::MAX) + FD_HEADROOM)
    })?;
    let rows = steps.step("footprint: measure", || measure(&binary, &counts))?;
    let size = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();
    println!(
        "\nhub footprint: {} ({} = {size} B, stripped), {host}, RLIMIT_NOFILE {limit}",
        binary.display(),
        human(size)
    );
    println!("| clients | VmRSS | VmHWM | per client over idle | threads | open fds |");
    println!("|--------:|------:|------:|---------------------:|--------:|---------:|");
    let idle = rows.first().map_or(0, |r| r.rss_kib);
    for row in &rows {
        let per_client = match row.clients {
            0 => String::from("-"),
            n => {
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                let tenths = row.rss_kib.saturating_sub(idle) * 10 / n;
                format!("{}.{} KiB", tenths / 10, tenths % 10)
            }
        };
        println!(
            "| {} | {} | {} | {per_client} | {} | {} |",
            row.clients,
            kib(row.rss_kib),
            kib(row.hwm_kib),
            row.threads,
            row.fds
        );
    }
    Ok(())
}

/// `"1000,10000"` as ascending counts.
fn parse_counts(list: &str) -> Result<Vec<usize>> {
    let mut counts = Vec::new();
    for part in list.split(',') {
        let n: usize = part
            .trim()
            .parse()
            .with_context(|| format!("--clients takes counts like 1000,10000; got {part:?}"))?;
        if n == 0 || n > MAX_CLIENTS {
            bail!("client counts must be between 1 and {MAX_CLIENTS}, got {n}");
        }
        counts.push(n);
    }
    if counts.windows(2).any(|w| w[0] >= w[1]) {
        bail!("client counts must be ascending, got {list:?}");
    }
    Ok(counts)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; fails if that is below `needed`.
/// Returns the limit now in force.
fn raise_nofile(needed: u64) -> Result<u64> {
    let Rlimit { current, maximum } = rustix::process::getrlimit(Resource::Nofile);
    let hard = maximum.unwrap_or(u64::MAX);
    if hard < needed {
        bail!(
            "RLIMIT_NOFILE hard limit is {hard}, the run needs {needed} descriptors per process: \
             raise it (e.g. `ulimit -Hn {needed}` as root, LimitNOFILE= for a service, \
             /etc/security/limits.conf) or measure fewer clients (--clients)"
        );
    }
    let soft = current.unwrap_or(u64::MAX);
    if soft < needed {
        rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: maximum,
                maximum,
            },
        )
        .context("raising the RLIMIT_NOFILE soft limit")?;
        println!("raised RLIMIT_NOFILE soft limit from {soft} to {hard}");
        return Ok(hard);
    }
    Ok(soft)
}

/// Memory and resources of the hub after one step.
struct Sample {
    clients: usize,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: usize,
}

/// A started hub; SIGKILLed when dropped before [`Hub::stop`].
struct Hub {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
}

impl Hub {
    fn start(binary: &Path, max_clients: usize) -> Result<Self> {
        let data_dir = std::env::temp_dir().join(format!("tern-footprint-{}", std::process::id()));
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let config = data_dir.join("tern.toml");
        // Embedded defaults except the port, the connection cap and per-connection logging.
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n\n[log]\nlevel = \"warn\"\n\n[[listener]]\n\
                 bind = \"127.0.0.1:0\"\nmax_connections = {}\n",
                data_dir.join("data"),
                max_clients + 16
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = std::fs::File::create(data_dir.join("tern.log")).context("hub log file")?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("hub stdout")?;
        let (tx, rx) = mpsc::channel();
        // The reader thread ends with the hub's stdout.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut hub = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
        };
        let line = rx.recv_timeout(START_TIMEOUT).with_context(|| {
            format!(
                "the hub printed no `listening on` line within {START_TIMEOUT:?} (log: {})",
                hub.data_dir.join("tern.log").display()
            )
        })?;
        hub.addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("unexpected first line from the hub: {line:?}"))?;
        Ok(hub)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sample(&self, clients: usize) -> Result<Sample> {
        let proc_dir = PathBuf::from(format!("/proc/{}", self.pid()));
        let status = std::fs::read_to_string(proc_dir.join("status"))
            .with_context(|| format!("reading {}/status", proc_dir.display()))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc/PID/status"))
        };
        let fds = std::fs::read_dir(proc_dir.join("fd"))
            .context("listing /proc/PID/fd")?
            .count();
        Ok(Sample {
            clients,
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
            fds,
        })
    }

    /// SIGTERM by PID, then waits; a hub still running after [`STOP_GRACE`] is killed and
    /// reported as an error.
    fn stop(mut self) -> Result<()> {
        let pid = Pid::from_child(&self.child);
        rustix::process::kill_process(pid, Signal::TERM).context("sending SIGTERM to the hub")?;
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the hub")? {
                if !status.success() {
                    bail!("the hub exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the hub did not exit within {STOP_GRACE:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Runs the hub and measures it idle and after each client count.
fn measure(binary: &Path, counts: &[usize]) -> Result<Vec<Sample>> {
    let started = Instant::now();
    let most = counts.last().copied().unwrap_or(0);
    let hub = Hub::start(binary, most)?;
    println!("hub pid {} listening on {}", hub.pid(), hub.addr);
    std::thread::sleep(SETTLE);
    let mut rows = vec![hub.sample(0)?];
    let mut clients: Vec<TcpStream> = Vec::with_capacity(most);
    for &count in counts {
        let step = Instant::now();
        while clients.len() < count {
            if started.elapsed() > RUN_DEADLINE {
                bail!(
                    "run deadline of {RUN_DEADLINE:?} passed after {} clients",
                    clients.len()
                );
            }
            let id = format!("footprint-{:05}", clients.len());
            clients.push(connect(hub.addr, &id).with_context(|| format!("client {id}"))?);
        }
        println!(
            "{count} clients connected ({:.1}s for this step)",
            step.elapsed().as_secs_f64()
        );
        std::thread::sleep(SETTLE);
        rows.push(hub.sample(count)?);
    }
    drop(clients);
    hub.stop()?;
    Ok(rows)
}

/// Opens one MQTT 3.1.1 connection with a clean session and waits for CONNACK 0.
fn connect(addr: SocketAddr, client_id: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).context("TCP connect")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CONNACK_TIMEOUT))?;
    stream
        .write_all(&connect_packet(client_id))
        .context("writing CONNECT")?;
    let mut connack = [0u8; 4];
    stream
        .read_exact(&mut connack)
        .context("reading CONNACK (is the hub refusing connections?)")?;
    if connack != [0x20, 0x02, 0x00, 0x00] {
        bail!("expected CONNACK accepted, got {connack:02x?}");
    }
    Ok(stream)
}

/// CONNECT (MQTT 3.1.1, clean session, [`KEEP_ALIVE_SECS`]) for a client id under 100
/// bytes, so the remaining length fits in one byte.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let mut variable = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02];
    variable.extend_from_slice(&KEEP_ALIVE_SECS.to_be_bytes());
    variable.extend_from_slice(&id_len.to_be_bytes());
    variable.extend_from_slice(id);
    let mut packet = vec![0x10, u8::try_from(variable.len()).unwrap_or(u8::MAX)];
    packet.extend_from_slice(&variable);
    packet
}

/// `12.3 MiB` from KiB.
fn kib(kib: u64) -> String {
    human(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_mqtt_311() {
        let packet = connect_packet("ab");
        assert_eq!(
            packet,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0x03, 0x84, 0, 2, b'a', b'b'
            ]
        );
    }

    #[test]
    fn client_counts_must_be_ascending_and_bounded() {
        assert_eq!(parse_counts("1000,10000").expect("valid"), [1000, 10000]);
        assert!(parse_counts("10000,1000").is_err());
        assert!(parse_counts("0").is_err());
        assert!(parse_counts("many").is_err());
        assert!(parse_counts(&format!("{}", MAX_CLIENTS + 1)).is_err());
    }
}
