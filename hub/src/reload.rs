//! Live changes to what the hub runs, without a restart: the configuration file's
//! `[[pipeline]]` and `[[bridge]]` tables on SIGHUP or when a watched file changes, and the
//! pipelines the admin API deploys and removes ([`Deployments`]).
//!
//! # Who owns which pipeline
//!
//! The pipelines in force are the configuration file's, in file order, followed by the
//! admin API's, in name order; a message goes through the first one matching its topic.
//! Each side replaces only its own: a reload of the file never touches the API's pipelines
//! (they persist in the data directory, `crate::admin::pipelines`, and are deployed again
//! at start-up), and the API cannot change the file's. Every change is built beside the
//! running set and swapped in whole, one change at a time.
//!
//! # How a reload goes
//!
//! - The file is read and validated whole; an invalid file is refused with the file, key
//!   and reason, and nothing changes.
//! - The new pipelines are built beside the running ones (filters whose name, wasm bytes and
//!   config are unchanged are reused with their warm instances); a filter that fails to
//!   compile or whose `init` rejects its config refuses the pipeline change, with the
//!   reason, and the running pipelines stay.
//! - The new set is swapped in atomically between batches: a batch runs entirely on the old
//!   set or entirely on the new one, and each connection's batches run in order, so no
//!   message is lost or reordered by a reload.
//! - Bridges are added, removed and restarted as [`crate::bridge::running`] describes;
//!   TLS files that cannot be read refuse the bridge changes, and the running bridges stay.
//! - Every change is logged: pipelines deployed, bridges added, removed and changed (with
//!   the keys that changed). Other changed sections (`[[listener]]`, `[admin]`, `[store]`,
//!   `[session]`, `[filters]`, `[log]`, `[transactions]`, `data_dir`) are reported as
//!   "restart to apply".
//!   Password and ACL files are reloaded on SIGHUP by [`crate::security`].
//!
//! Changes are detected by polling file metadata (modification time, length, inode) once a
//! second: it works the same on every file system and with every way of replacing a file
//! (in place, or written aside and renamed, as deploy tools do). SIGHUP reloads at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::admin::pipelines::{
    ModuleId, PipelineName, PipelineSpec, PipelineStore, PipelineStoreError,
};
use crate::bridge::Bridges;
use crate::broker::Broker;
use crate::config::{Config, ConfigError};
use crate::filter_host::{
    DeployError, FailurePolicy, FilterError, FilterHost, PipelineConfig, Pipelines,
};
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

/// The pipelines `config` starts with: the file's, then those the admin API deployed
/// (persisted in the data directory). Errors name the persisted file and the reason.
pub fn startup_pipelines(config: &Config) -> Result<Vec<PipelineConfig>, ConfigError> {
    let store = PipelineStore::new(&config.data_dir);
    let api = load_api(&store)?;
    Ok(compose(&store, &config.pipeline, &api))
}

fn load_api(store: &PipelineStore) -> Result<ApiPipelines, ConfigError> {
    store.load().map_err(|err| ConfigError::Invalid {
        file: store.file().to_path_buf(),
        key: String::from("pipelines"),
        reason: err.to_string(),
    })
}

/// The admin API's pipelines, by name.
pub type ApiPipelines = BTreeMap<PipelineName, PipelineSpec>;

/// The file's pipelines followed by the API's.
fn compose(
    store: &PipelineStore,
    file: &[PipelineConfig],
    api: &ApiPipelines,
) -> Vec<PipelineConfig> {
    file.iter()
        .cloned()
        .chain(api.values().map(|spec| store.to_config(spec)))
        .collect()
}

/// Where a deployed pipeline comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file's `[[pipeline]]` at this index.
    File(usize),
    /// The admin API, under this name.
    Api(PipelineName),
}

/// Where a deployed filter's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmSource {
    /// A file named by the configuration file.
    File(PathBuf),
    /// A module uploaded through the admin API.
    Module(ModuleId),
}

/// One filter of a [`DeployedPipeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedFilter {
    /// Its name.
    pub name: String,
    /// Its code.
    pub wasm: WasmSource,
    /// The config its `init` accepted.
    pub config: String,
}

/// One pipeline of the set in force, as its owner gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedPipeline {
    /// Who owns it.
    pub origin: Origin,
    /// Its topic filters.
    pub topics: Vec<String>,
    /// Its failure policy.
    pub on_failure: FailurePolicy,
    /// Its chain, in order.
    pub filters: Vec<DeployedFilter>,
}

/// The set `compose(file, api)` deploys, described pipeline by pipeline.
fn layout(file: &[PipelineConfig], api: &ApiPipelines) -> Vec<DeployedPipeline> {
    let from_file = file.iter().enumerate().map(|(i, p)| DeployedPipeline {
        origin: Origin::File(i),
        topics: p.topics.clone(),
        on_failure: p.on_failure.clone(),
        filters: p
            .filters
            .iter()
            .map(|f| DeployedFilter {
                name: f.name.clone(),
                wasm: WasmSource::File(f.wasm.clone()),
                config: f.config.clone(),
            })
            .collect(),
    });
    let from_api = api.iter().map(|(name, spec)| DeployedPipeline {
        origin: Origin::Api(name.clone()),
        topics: spec.topics.clone(),
        on_failure: spec.on_failure.clone(),
        filters: spec
            .filters
            .iter()
            .map(|f| DeployedFilter {
                name: f.name.clone(),
                wasm: WasmSource::Module(f.module.clone()),
                config: f.config.clone(),
            })
            .collect(),
    });
    from_file.chain(from_api).collect()
}

/// What the two owners have deployed.
#[derive(Debug)]
struct Owned {
    file: Vec<PipelineConfig>,
    api: ApiPipelines,
}

/// Why a filter was refused, for an API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The module cannot be used: not wasm, does not compile, wrong world, cannot be
    /// instantiated.
    Load,
    /// The filter's `init` refused its config, or declared a topic template the hub refuses.
    ConfigRejected,
    /// `init` trapped, ran out of time or memory, or is not deterministic.
    InitFailed,
}

impl Refusal {
    fn of(err: &FilterError) -> Option<Self> {
        match err {
            FilterError::InitRefused(_) | FilterError::Template { .. } => {
                Some(Refusal::ConfigRejected)
            }
            FilterError::InitFailed { .. } | FilterError::InitUnstable => Some(Refusal::InitFailed),
            FilterError::NotWasm
            | FilterError::PrecompiledModule
            | FilterError::CompilerMissing
            | FilterError::Componentize(_)
            | FilterError::Compile(_)
            | FilterError::Deserialize(_)
            | FilterError::World(_)
            | FilterError::Instantiate(_) => Some(Refusal::Load),
            FilterError::Engine(_) | FilterError::Io { .. } => None,
        }
    }

    /// The name used in API answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Load => "load",
            Refusal::ConfigRejected => "config_rejected",
            Refusal::InitFailed => "init_failed",
        }
    }
}

/// Why an API deploy or removal did not take effect. Whatever the reason, the pipelines
/// in force are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is invalid (names the field).
    #[error("{0}")]
    Invalid(String),
    /// A filter names a module that was not uploaded.
    #[error("filter `{filter}`: module {module} was not uploaded (PUT /modules/{module})")]
    MissingModule {
        /// The filter.
        filter: String,
        /// Its module.
        module: ModuleId,
    },
    /// A filter of the pipeline was refused by the filter host.
    #[error("filter `{filter}`: {reason}")]
    Refused {
        /// The filter.
        filter: String,
        /// What kind of refusal.
        refusal: Refusal,
        /// The host's reason.
        reason: String,
    },
    /// Another pipeline of the set cannot be deployed any more (e.g. a wasm file of the
    /// configuration file changed on disk and no longer loads).
    #[error("cannot rebuild the pipelines: {0}")]
    Conflict(String),
    /// No API pipeline has this name.
    #[error("no pipeline deployed through the API is named {0:?}")]
    NotFound(String),
    /// The change took effect but could not be persisted; it was undone.
    #[error("cannot persist the change, undone: {0}")]
    Persist(#[from] PipelineStoreError),
    /// The filter host failed (engine, I/O, task).
    #[error("{0}")]
    Internal(String),
}

/// What the hub runs that can change without a restart, and the only way to change it:
/// reloads of the configuration file and admin API deploys go through here, one at a
/// time.
#[derive(Debug)]
pub struct Deployments {
    broker: Arc<Broker>,
    bridges: Arc<Bridges>,
    api_store: PipelineStore,
    /// Held across a whole change.
    owned: tokio::sync::Mutex<Owned>,
    /// Each pipeline of the set in force, by index (read without waiting for a change in
    /// progress).
    layout: Mutex<Vec<DeployedPipeline>>,
}

impl Deployments {
    /// The deployments of a hub started with `broker`'s configuration, whose pipelines
    /// were deployed from [`startup_pipelines`], and `bridges`.
    pub fn new(broker: Arc<Broker>, bridges: Arc<Bridges>) -> crate::Result<Self> {
        let api_store = PipelineStore::new(&broker.config().data_dir);
        let api = load_api(&api_store)?;
        let file = broker.config().pipeline.clone();
        let layout = Mutex::new(layout(&file, &api));
        Ok(Self {
            broker,
            bridges,
            api_store,
            owned: tokio::sync::Mutex::new(Owned { file, api }),
            layout,
        })
    }

    /// The store of API pipelines and modules.
    pub fn api_store(&self) -> &PipelineStore {
        &self.api_store
    }

    /// Each pipeline in force, by index.
    pub fn layout(&self) -> Vec<DeployedPipeline> {
        self.layout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The API's pipelines in force (waits for a change in progress).
    pub async fn api_pipelines(&self) -> ApiPipelines {
        self.owned.lock().await.api.clone()
    }

    /// The API's pipelines, locked: no change starts until the guard is dropped.
    pub async fn lock_api(&self) -> tokio::sync::MappedMutexGuard<'_, ApiPipelines> {
        tokio::sync::MutexGuard::map(self.owned.lock().await, |owned| &mut owned.api)
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Deploys `spec` as API pipeline `name` (new or replacing one), persists it, and
    /// returns its index in the set in force. Refused: nothing changes.
    pub async fn deploy_api(
        &self,
        name: PipelineName,
        spec: PipelineSpec,
    ) -> Result<usize, ApiError> {
        spec.validate().map_err(ApiError::Invalid)?;
        // Taken first: a module cannot be deleted between this check and the deploy.
        let mut owned = self.owned.lock().await;
        for filter in &spec.filters {
            if !self.api_store.has_module(&filter.module) {
                return Err(ApiError::MissingModule {
                    filter: filter.name.clone(),
                    module: filter.module.clone(),
                });
            }
        }
        let mut api = owned.api.clone();
        api.insert(name.clone(), spec);
        self.change_api(&mut owned, api, Some(&name)).await?;
        let index = self
            .layout()
            .iter()
            .position(|p| p.origin == Origin::Api(name.clone()))
            .unwrap_or_default();
        info!(pipeline = %name, index, "pipeline deployed through the admin API");
        Ok(index)
    }

    /// Removes API pipeline `name` and persists the removal.
    pub async fn remove_api(&self, name: &PipelineName) -> Result<(), ApiError> {
        let mut owned = self.owned.lock().await;
        let mut api = owned.api.clone();
        if api.remove(name).is_none() {
            return Err(ApiError::NotFound(name.to_string()));
        }
        self.change_api(&mut owned, api, None).await?;
        info!(pipeline = %name, "pipeline removed through the admin API");
        Ok(())
    }

    /// Deploys the file's pipelines with `api`, persists `api`, and makes it the API's
    /// set; `subject` is the pipeline the request is about (its refusals are its own).
    async fn change_api(
        &self,
        owned: &mut Owned,
        api: ApiPipelines,
        subject: Option<&PipelineName>,
    ) -> Result<(), ApiError> {
        let wanted = compose(&self.api_store, &owned.file, &api);
        let layout = layout(&owned.file, &api);
        if let Err(err) = self.install(wanted).await {
            return Err(api_refusal(err, &layout, subject));
        }
        let (store, to_save) = (self.api_store.clone(), api.clone());
        // Written and fsynced on a blocking thread: an SD card may take a while.
        let saved = tokio::task::spawn_blocking(move || store.save(&to_save))
            .await
            .unwrap_or_else(|join| {
                Err(PipelineStoreError::Io {
                    path: self.api_store.file().to_path_buf(),
                    source: std::io::Error::other(join.to_string()),
                })
            });
        if let Err(err) = saved {
            let previous = compose(&self.api_store, &owned.file, &owned.api);
            if let Err(undo) = self.install(previous).await {
                warn!(cause = %undo, "undoing an API deploy that could not be persisted failed");
            }
            return Err(err.into());
        }
        owned.api = api;
        *self.layout.lock().unwrap_or_else(PoisonError::into_inner) = layout;
        Ok(())
    }

    /// Deploys `wanted` (on a blocking thread: filters compile).
    async fn install(&self, wanted: Vec<PipelineConfig>) -> Result<(), ReloadError> {
        let broker = Arc::clone(&self.broker);
        tokio::task::spawn_blocking(move || deploy(&broker, &wanted)).await?
    }

    /// Reads the configuration file again and applies its pipelines and bridges. Returns
    /// the file's pipelines as asked for (deployed or refused), for the watcher, or `None`
    /// when the file could not be used.
    async fn reload_file(&self, source: &Path) -> Option<Vec<PipelineConfig>> {
        let config = match Config::load(source) {
            Ok(config) => config,
            Err(err) => {
                warn!(cause = %err, "reload refused: the configuration stays as it is");
                return None;
            }
        };
        report_restart_only_changes(self.broker.config(), &config);
        let mut owned = self.owned.lock().await;
        let wanted = compose(&self.api_store, &config.pipeline, &owned.api);
        match self.install(wanted).await {
            Ok(()) => {
                *self.layout.lock().unwrap_or_else(PoisonError::into_inner) =
                    layout(&config.pipeline, &owned.api);
                // Tables that differ, by index in the file (a changed wasm file under the
                // same path shows in the "watched files changed" line instead).
                let changed: Vec<usize> = (0..owned.file.len().max(config.pipeline.len()))
                    .filter(|&i| owned.file.get(i) != config.pipeline.get(i))
                    .collect();
                owned.file = config.pipeline.clone();
                info!(
                    ?changed,
                    pipelines = config.pipeline.len(),
                    filters = config
                        .pipeline
                        .iter()
                        .map(|p| p.filters.len())
                        .sum::<usize>(),
                    api_pipelines = owned.api.len(),
                    "pipelines reloaded"
                );
            }
            Err(err) => {
                warn!(cause = %err, "pipeline reload refused; the running pipelines stay");
            }
        }
        drop(owned);
        match crate::bridge::prepare(&config) {
            Ok(prepared) => match self.bridges.apply(prepared).await {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => info!(
                    added = ?changes.added,
                    removed = ?changes.removed,
                    changed = ?changes.changed,
                    "bridges reloaded"
                ),
                Err(err) => {
                    warn!(cause = %err, "bridge reload stopped: the store refused a cursor")
                }
            },
            Err(err) => warn!(cause = %err, "bridge reload refused; the running bridges stay"),
        }
        Some(config.pipeline)
    }
}

/// An install error as an API answer about `subject`.
fn api_refusal(
    err: ReloadError,
    layout: &[DeployedPipeline],
    subject: Option<&PipelineName>,
) -> ApiError {
    let ReloadError::Deploy(deploy) = err else {
        return ApiError::Internal(err.to_string());
    };
    let pipeline = match &deploy {
        DeployError::Filter { pipeline, .. } | DeployError::Pipeline { pipeline, .. } => *pipeline,
    };
    let origin = layout.get(pipeline).map(|p| &p.origin);
    let ours = match (origin, subject) {
        (Some(Origin::Api(name)), Some(subject)) => name == subject,
        _ => false,
    };
    if !ours {
        let origin = match origin {
            Some(Origin::File(i)) => format!("the configuration file's pipeline {i}"),
            Some(Origin::Api(name)) => format!("API pipeline {name:?}"),
            None => format!("pipeline {pipeline}"),
        };
        return ApiError::Conflict(format!("{origin}: {deploy}"));
    }
    match deploy {
        DeployError::Filter { filter, source, .. } => match Refusal::of(&source) {
            Some(refusal) => ApiError::Refused {
                filter,
                refusal,
                reason: source.to_string(),
            },
            None => ApiError::Internal(format!("filter `{filter}`: {source}")),
        },
        DeployError::Pipeline { reason, .. } => ApiError::Invalid(reason),
    }
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Hub(#[from] crate::Error),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("the deploy task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Watches the configuration file and the file pipelines' wasm files, and reloads on
/// change or SIGHUP, until shutdown.
pub async fn watch(deployments: Arc<Deployments>) {
    let broker = Arc::clone(&deployments.broker);
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
        let Some(file) = source.as_deref() else {
            info!("SIGHUP: no configuration file to reload (started without --config)");
            stamps = now;
            continue;
        };
        if forced {
            info!(file = %file.display(), "SIGHUP: reloading the configuration");
        } else {
            let changed: Vec<String> = now
                .iter()
                .filter(|(path, stamp)| stamps.get(*path) != Some(*stamp))
                .map(|(path, _)| path.display().to_string())
                .collect();
            info!(files = ?changed, "watched files changed: reloading the configuration");
        }
        // Watch what the operator asked for, so fixing it triggers the next reload.
        if let Some(asked) = deployments.reload_file(file).await {
            pipelines = asked;
        }
        stamps = watched_files(source.as_deref(), &pipelines);
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
        // Unreachable while changes are serialised by `Deployments`; deploy into what is
        // there.
        drop(ours);
        if let Some(installed) = broker.pipelines() {
            installed.deploy(wanted)?;
        }
    }
    Ok(())
}

/// Warns about changed sections that only a restart applies. Sections the command line
/// overrode are not compared (the file's value was never in force).
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
    if running.admin != new.admin {
        sections.push("admin");
    }
    if running.log != new.log {
        sections.push("log");
    }
    if running.transactions != new.transactions {
        sections.push("transactions");
    }
    sections.retain(|section| !running.overridden.contains(section));
    if !sections.is_empty() {
        warn!(
            ?sections,
            "configuration changed outside [[pipeline]] and [[bridge]]: restart to apply"
        );
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

/// The SIGHUP listener [`listen_for_hangup`] created, until the watcher takes it.
#[cfg(unix)]
static EARLY_HANGUP: Mutex<Option<tokio::signal::unix::Signal>> = Mutex::new(None);

/// Starts listening for SIGHUP now, on the current tokio runtime: the binary calls it
/// before it announces its listeners, so SIGHUP no longer terminates the process and a
/// SIGHUP that arrives before the reload watcher runs is kept for it, not lost.
#[cfg(unix)]
pub fn listen_for_hangup() -> std::io::Result<()> {
    let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    *EARLY_HANGUP.lock().unwrap_or_else(PoisonError::into_inner) = Some(signal);
    Ok(())
}

/// Nothing to do without Unix signals.
#[cfg(not(unix))]
pub fn listen_for_hangup() -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    let early = EARLY_HANGUP
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(signal) = early {
        return Some(signal);
    }
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
