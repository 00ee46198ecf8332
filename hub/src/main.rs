//! `tern`: command line of the Tern hub. Parses arguments, installs logging, loads the
//! configuration and calls [`tern_hub::run`]; nothing else lives here.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tern_hub::config::{Config, DEFAULT_TOML, ListenerConfig, LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

mod filter_cli;
mod passwd_cli;
mod status_cli;

/// Tern: edge MQTT message hub.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about)]
struct Cli {
    /// More log output (-v debug, -vv trace) than `[log] level`; RUST_LOG takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MQTT (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Validate a configuration file: prints "ok" or the first error.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the default configuration, with every key documented.
    GenerateConfig,
    /// Work with WebAssembly filters offline.
    #[command(subcommand)]
    Filter(FilterCommand),
    /// Summarise a running hub: clients, rates, store, filters, bridges (admin API, or
    /// `$SYS` over MQTT with --target).
    Status(status_cli::StatusArgs),
    /// Add, update or delete a user in a password file (Argon2id hashes).
    Passwd(passwd_cli::PasswdArgs),
}

#[derive(Debug, Subcommand)]
enum FilterCommand {
    /// Run a filter on sample messages and print one verdict per message (JSON lines).
    Test(filter_cli::TestArgs),
    /// Compile a filter ahead of time (`.cwasm`), e.g. for a gateway built without a compiler.
    Compile(filter_cli::CompileArgs),
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (without it, built-in defaults).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured listeners (port 0 picks a free one).
    #[arg(short, long)]
    listen: Option<SocketAddr>,
    /// Directory for durable state, overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// mimalloc: the ingest and delivery paths allocate and free small buffers per message on
/// several threads, which the system allocator does with more contention and fragmentation.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the heap on 4 KiB pages. mimalloc marks its arena `MADV_HUGEPAGE`, so where the
/// kernel's transparent huge pages are in `madvise` mode (the usual default) every 2 MiB of
/// heap the hub touches becomes resident at once: 8 MB of an idle hub's 20 MB RSS were such
/// pages (`docs/benchmarks.md`, "Footprint under QoS 1 ingest").
///
/// The kernel decides at each page fault, and the allocator has faulted in its first pages
/// before `main`; so the process disables THP for itself and, once, executes itself again
/// (the flag survives `execve`, the PID and arguments stay). Where the kernel lacks the flag
/// or the executable cannot be run again, the hub carries on as it is.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[expect(
    unsafe_code,
    reason = "prctl(2) has no safe wrapper among the hub's dependencies"
)]
fn keep_heap_on_small_pages() {
    use std::ffi::{c_int, c_ulong};
    use std::os::unix::process::CommandExt as _;
    /// `PR_SET_THP_DISABLE` and `PR_GET_THP_DISABLE` from `<linux/prctl.h>`.
    const PR_SET_THP_DISABLE: c_int = 41;
    const PR_GET_THP_DISABLE: c_int = 42;
    unsafe extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    let (on, unused): (c_ulong, c_ulong) = (1, 0);
    // SAFETY: both options take integer arguments only and touch no memory of the caller;
    // an unknown option returns -1 (EINVAL).
    if unsafe { prctl(PR_GET_THP_DISABLE, unused, unused, unused, unused) } != 0 {
        return; // already off (this is the second start), or unknown to the kernel
    }
    // SAFETY: as above.
    if unsafe { prctl(PR_SET_THP_DISABLE, on, unused, unused, unused) } != 0 {
        return;
    }
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else {
        return;
    };
    // Returns only if the exec failed: carry on with the pages faulted so far.
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
}

fn main() -> ExitCode {
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    keep_heap_on_small_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::from(2)
            }
        },
        Some(Command::GenerateConfig) => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Some(Command::Filter(command)) => {
            init_tracing(cli.verbose, &LogConfig::default());
            let result = match command {
                FilterCommand::Test(args) => filter_cli::test(&args),
                FilterCommand::Compile(args) => filter_cli::compile(&args),
            };
            match result {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("tern: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Status(args)) => match status_cli::status(&args) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("tern status: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Passwd(args)) => match passwd_cli::passwd(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("tern passwd: {err:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve(args)) => serve_main(cli.verbose, args),
        None => serve_main(cli.verbose, ServeArgs::default()),
    }
}

fn serve_main(verbose: u8, args: ServeArgs) -> ExitCode {
    // Loaded before logging starts: `[log]` says how to log. Its errors go to stderr as is.
    let config = match &args.config {
        Some(file) => Config::load(file),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("tern: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(verbose, &config.log);
    match serve(config, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tern: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the stderr subscriber. The filter is, strongest first: `RUST_LOG` when set
/// (an invalid one is reported and ignored), `-v`/`-vv`, then `log.level`. rumqttc's own
/// debug lines stay off unless asked for by name.
fn init_tracing(verbose: u8, log: &LogConfig) {
    let configured = match verbose {
        0 => log.level.clone(),
        1 => String::from("debug"),
        _ => String::from("trace"),
    };
    let from_config = || {
        EnvFilter::builder()
            .parse(format!("rumqttc=info,{configured}"))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let mut rejected = None;
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => {
            match EnvFilter::builder().parse(&directives) {
                Ok(filter) => filter,
                Err(err) => {
                    rejected = Some((directives, err));
                    from_config()
                }
            }
        }
        _ => from_config(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    if let Some((directives, err)) = rejected {
        tracing::warn!(
            rust_log = directives,
            cause = %err,
            "RUST_LOG is not a valid filter; using the configured level"
        );
    }
}

fn serve(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(addr) = args.listen {
        // The first listener's settings (protocol, TLS, authentication) move to ADDR.
        let first = config.listener.first().cloned().unwrap_or_default();
        config.listener = vec![ListenerConfig {
            bind: addr,
            ..first
        }];
        config.overridden.push("listener");
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
        config.overridden.push("data_dir");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        tern_hub::reload::listen_for_hangup().context("installing the SIGHUP handler")?;
        tern_hub::prepare_data_dir(&config)?;
        // Opened before binding: a store that is in use, corrupted or unreadable stops the
        // hub before it announces a listener.
        let store = tern_hub::open_store(&config)?;
        let listeners = tern_hub::bind_listeners(&config).await?;
        let mut stdout = std::io::stdout().lock();
        for listener in &listeners {
            // The integration tests and supervisors read this line to learn the bound port.
            writeln!(stdout, "listening on {}", listener.local_addr()?)?;
        }
        stdout.flush()?;
        drop(stdout);
        tern_hub::run_with_store(listeners, config, store, shutdown).await?;
        Ok(())
    })
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that completes when
/// either arrives. Installing before the `listening on` line means a supervisor that signals
/// right after reading it always gets a graceful shutdown, never the default kill.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
