//! Hot deploy of filter pipelines: watches the configuration file and every filter's wasm
//! file, and redeploys the `[[pipeline]]` tables when one of them changes or the process
//! gets SIGHUP.
//!
//! How a reload goes:
//! - The file is read and validated whole; an invalid file is refused with the file, key
//!   and reason, and the running pipelines stay.
//! - The new pipelines are built beside the running ones (filters whose name, wasm bytes and
//!   config are unchanged are reused with their warm instances); a filter that fails to
//!   compile or whose `init` rejects its config refuses the whole reload, with the reason,
//!   and the running pipelines stay.
//! - The new set is swapped in atomically between batches: a batch runs entirely on the old
//!   set or entirely on the new one, and each connection's batches run in order, so no
//!   message is lost or reordered by a reload.
//! - Only `[[pipeline]]` takes effect without a restart; other changed sections are
//!   reported ("restart to apply").
//!
//! Changes are detected by polling file metadata (modification time, length, inode) once a
//! second: it works the same on every file system and with every way of replacing a file
//! (in place, or written aside and renamed, as deploy tools do). SIGHUP reloads at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::filter_host::{FilterHost, PipelineConfig, Pipelines};
use crate::metrics::FilterMetrics;

/// How often the watched files are checked.
const POLL: Duration = Duration::from_secs(1);

/// A filter host and an empty pipeline holder for `config` (its `[filters]` limits and
/// data directory), counting into `metrics`.
pub fn new_pipelines(config: &Config, metrics: Arc<FilterMetrics>) -> crate::Result<Pipelines> {
    let host = FilterHost::new(&config.filters, &config.data_dir, metrics)?;
    Ok(Pipelines::new(host))
}

/// What identifies one version of a file: a change of any field is a change of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// `None` when the file cannot be read (missing: a reload will report it).
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}

/// The stamps of every file a configuration depends on.
type Stamps = BTreeMap<PathBuf, Option<FileStamp>>;

fn watched_files(source: Option<&Path>, pipelines: &[PipelineConfig]) -> Stamps {
    source
        .into_iter()
        .map(Path::to_path_buf)
        .chain(
            pipelines
                .iter()
                .flat_map(|p| p.filters.iter().map(|f| f.wasm.clone())),
        )
        .map(|path| {
            let stamp = FileStamp::of(&path);
            (path, stamp)
        })
        .collect()
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Hub(#[from] crate::Error),
    #[error(transparent)]
    Deploy(#[from] crate::filter_host::DeployError),
    #[error("the deploy task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Watches the files of the broker's configuration and redeploys its pipelines on change or
/// SIGHUP, until shutdown.
pub async fn watch(broker: Arc<Broker>) {
    let source = broker.config().source.clone();
    let mut pipelines = broker.config().pipeline.clone();
    let mut stamps = watched_files(source.as_deref(), &pipelines);
    let mut hangup = hangup_signal();
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = broker.shutdown().triggered() => return,
            _ = ticker.tick() => false,
            () = next_hangup(&mut hangup) => true,
        };
        let now = watched_files(source.as_deref(), &pipelines);
        if !forced && now == stamps {
            continue;
        }
        if forced {
            info!("SIGHUP: reloading the filter pipelines");
        } else {
            let changed: Vec<String> = now
                .iter()
                .filter(|(path, stamp)| stamps.get(*path) != Some(*stamp))
                .map(|(path, _)| path.display().to_string())
                .collect();
            info!(files = ?changed, "watched files changed: reloading the filter pipelines");
        }
        match reload(&broker, source.as_deref(), &pipelines).await {
            Ok(deployed) => {
                info!(
                    pipelines = deployed.len(),
                    filters = deployed.iter().map(|p| p.filters.len()).sum::<usize>(),
                    "pipelines reloaded"
                );
                pipelines = deployed;
            }
            Err((err, attempted)) => {
                warn!(cause = %err, "reload refused; the running pipelines stay");
                // Watch what the operator asked for, so fixing it triggers the next reload.
                if let Some(attempted) = attempted {
                    pipelines = attempted;
                }
            }
        }
        stamps = watched_files(source.as_deref(), &pipelines);
    }
}

/// Reads the configuration (from `source`, or keeps `running` when the hub was started
/// without a file) and deploys its pipelines. On failure returns the error and, when the
/// file parsed, the pipelines it asked for.
async fn reload(
    broker: &Arc<Broker>,
    source: Option<&Path>,
    running: &[PipelineConfig],
) -> Result<Vec<PipelineConfig>, (ReloadError, Option<Vec<PipelineConfig>>)> {
    let wanted = match source {
        Some(file) => {
            let config = Config::load(file).map_err(|e| (e.into(), None))?;
            report_restart_only_changes(broker.config(), &config);
            config.pipeline
        }
        None => running.to_vec(),
    };
    let task_broker = Arc::clone(broker);
    let task_wanted = wanted.clone();
    let deployed = tokio::task::spawn_blocking(move || deploy(&task_broker, &task_wanted)).await;
    match deployed {
        Ok(Ok(())) => Ok(wanted),
        Ok(Err(err)) => Err((err, Some(wanted))),
        Err(join) => Err((join.into(), Some(wanted))),
    }
}

/// Deploys `wanted` into the broker's pipelines, creating the filter host on first use.
fn deploy(broker: &Broker, wanted: &[PipelineConfig]) -> Result<(), ReloadError> {
    if let Some(pipelines) = broker.pipelines() {
        pipelines.deploy(wanted)?;
        return Ok(());
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let pipelines = new_pipelines(broker.config(), Arc::clone(&broker.metrics().filters))?;
    pipelines.deploy(wanted)?;
    if let Err(ours) = broker.install_pipelines(Arc::new(pipelines)) {
        // Unreachable while reloads are serialised by `watch`; deploy into what is there.
        drop(ours);
        if let Some(installed) = broker.pipelines() {
            installed.deploy(wanted)?;
        }
    }
    Ok(())
}

/// Warns about changed sections that only a restart applies.
fn report_restart_only_changes(running: &Config, new: &Config) {
    let mut sections = Vec::new();
    if running.data_dir != new.data_dir {
        sections.push("data_dir");
    }
    if running.listener != new.listener {
        sections.push("listener");
    }
    if running.session != new.session {
        sections.push("session");
    }
    if running.store != new.store {
        sections.push("store");
    }
    if running.filters != new.filters {
        sections.push("filters");
    }
    if running.bridge != new.bridge {
        sections.push("bridge");
    }
    if running.admin != new.admin {
        sections.push("admin");
    }
    if !sections.is_empty() {
        warn!(
            ?sections,
            "configuration changed outside [[pipeline]]: restart to apply"
        );
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            warn!(cause = %err, "cannot install the SIGHUP handler; file changes still reload");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await;
}
