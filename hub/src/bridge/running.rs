//! The running bridges, and how a configuration reload changes them.
//!
//! Every bridge task runs on the hub's task tracker with a stop handle of its own, linked
//! to the hub's shutdown, so a reload can stop one bridge and the hub still waits for all
//! of them at shutdown. [`Bridges::apply`] compares the configured bridges with the
//! running ones by name:
//!
//! - **added**: starts. A bridge a reload stopped earlier in this process resumes where it
//!   stopped and forwards what arrived meanwhile; a bridge never seen starts at the tail
//!   of the log, like at start-up.
//! - **removed**: stops. On its way out the task saves its cursor, which stays in the
//!   store: the outbox (what it has not forwarded) is kept, and re-adding the bridge by a
//!   later reload forwards it. A restart deletes the cursors of bridges no longer
//!   configured (see the module docs of [`crate::bridge`]).
//! - **changed** (its table, or the content of its TLS files): stops, then starts again
//!   from the durable state it saved, with the new settings. What the upstream had not
//!   acknowledged is sent again with the same ids: at least once, in order, no gap.
//! - **unchanged**: untouched; its connection stays up.
//!
//! The statuses (`$SYS/broker/bridges/<name>/...`, `GET /bridges`) follow: a restarted
//! bridge keeps its status, so its counters keep counting; a removed bridge's disappears.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::config::BridgeConfig;
use super::status::BridgeStatus;
use super::task::{BridgeTask, Resume};
use super::upstream::Upstream;
use super::{Prepared, TlsDigest};
use crate::metrics::SysSource;
use crate::shutdown::Shutdown;
use crate::store::{Store, WriteOp};

/// One running bridge.
#[derive(Debug)]
struct Running {
    config: Arc<BridgeConfig>,
    tls_digest: Option<TlsDigest>,
    status: Arc<BridgeStatus>,
    /// Stops this bridge alone; triggered too when the hub shuts down.
    stop: Shutdown,
    /// The task; yields the durable state it saved.
    task: JoinHandle<Resume>,
}

/// What a reload changed in the bridges, by name (each list sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeChanges {
    /// Bridges started.
    pub added: Vec<String>,
    /// Bridges stopped (their cursors stay in the store).
    pub removed: Vec<String>,
    /// Bridges restarted with new settings, with the keys that changed.
    pub changed: Vec<(String, Vec<&'static str>)>,
}

impl BridgeChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The statuses of the running bridges, as one `$SYS` source.
#[derive(Debug, Default)]
struct Statuses(Mutex<Vec<Arc<BridgeStatus>>>);

impl Statuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<BridgeStatus>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SysSource for Statuses {
    fn sys_topics(&self, out: &mut Vec<(String, String)>) {
        let statuses = self.lock().clone();
        for status in statuses {
            status.sys_topics(out);
        }
    }
}

/// The running bridges of one hub.
#[derive(Debug)]
pub struct Bridges {
    store: Store,
    /// The hub's shutdown.
    stop: Shutdown,
    /// Running bridges by name. Held across a whole reload, so reloads are serialised.
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Bridges a reload stopped, with where they stopped.
    parked: Mutex<BTreeMap<String, Resume>>,
    statuses: Arc<Statuses>,
}

impl Bridges {
    pub(super) fn new(store: Store, stop: Shutdown) -> Self {
        Self {
            store,
            stop,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            parked: Mutex::new(BTreeMap::new()),
            statuses: Arc::default(),
        }
    }

    /// The `$SYS` source of every running bridge's status (register it with the broker).
    pub fn sys_source(&self) -> Arc<dyn SysSource> {
        Arc::clone(&self.statuses) as Arc<dyn SysSource>
    }

    /// Starts `prepared` from `resume` (already durable), with `status` (a fresh one when
    /// `None`). A bridge whose client cannot be created is logged and not started.
    pub(super) async fn launch(
        &self,
        prepared: Prepared,
        resume: Resume,
        status: Option<Arc<BridgeStatus>>,
    ) {
        let mut running = self.running.lock().await;
        self.launch_locked(&mut running, prepared, resume, status);
    }

    fn launch_locked(
        &self,
        running: &mut BTreeMap<String, Running>,
        prepared: Prepared,
        resume: Resume,
        status: Option<Arc<BridgeStatus>>,
    ) {
        let Prepared {
            config,
            tls,
            tls_digest,
        } = prepared;
        let upstream = match Upstream::start(&config, tls) {
            Ok(upstream) => upstream,
            Err(reason) => {
                // Validated at load; kept as a log line rather than a panic.
                warn!(bridge = config.name, reason, "bridge not started");
                return;
            }
        };
        let status =
            status.unwrap_or_else(|| Arc::new(BridgeStatus::new(&config.name, resume.cursor)));
        let own = Shutdown::new();
        let (hub, linked) = (self.stop.clone(), own.clone());
        self.stop.tasks().spawn(async move {
            tokio::select! {
                () = hub.triggered() => linked.trigger(),
                () = linked.triggered() => {}
            }
        });
        let task = BridgeTask::new(
            Arc::clone(&config),
            self.store.clone(),
            Arc::clone(&status),
            own.clone(),
            upstream,
            resume,
        );
        let task = self.stop.tasks().spawn(task.run());
        {
            let mut statuses = self.statuses.lock();
            statuses.retain(|s| s.name() != config.name);
            statuses.push(Arc::clone(&status));
        }
        running.insert(
            config.name.clone(),
            Running {
                config,
                tls_digest,
                status,
                stop: own,
                task,
            },
        );
    }

    /// Stops bridge `running` and waits for it to save its state; `None` if its task
    /// failed (then its last durable cursor in the store is where it resumes).
    async fn halt(running: Running) -> (Arc<BridgeStatus>, Option<Resume>) {
        running.stop.trigger();
        let resume = match running.task.await {
            Ok(resume) => Some(resume),
            Err(err) => {
                warn!(bridge = running.config.name, cause = %err, "bridge task failed");
                None
            }
        };
        (running.status, resume)
    }

    /// Makes the running bridges those of `wanted` (see the module docs) and returns what
    /// changed. Errors only when the store refuses a new bridge's cursor; bridges already
    /// handled stay as they are then.
    pub async fn apply(
        &self,
        wanted: Vec<Prepared>,
    ) -> Result<BridgeChanges, crate::store::StoreError> {
        let mut running = self.running.lock().await;
        let mut changes = BridgeChanges::default();
        let wanted_names: Vec<String> = wanted.iter().map(|p| p.config.name.clone()).collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|name| !wanted_names.contains(name))
            .cloned()
            .collect();
        for name in gone {
            let Some(bridge) = running.remove(&name) else {
                continue;
            };
            let (_, resume) = Self::halt(bridge).await;
            self.statuses.lock().retain(|s| s.name() != name);
            if let Some(resume) = resume {
                self.lock_parked().insert(name.clone(), resume);
            }
            changes.removed.push(name);
        }
        for prepared in wanted {
            let name = prepared.config.name.clone();
            match running.remove(&name) {
                Some(bridge)
                    if *bridge.config == *prepared.config
                        && bridge.tls_digest == prepared.tls_digest =>
                {
                    running.insert(name, bridge);
                }
                Some(bridge) => {
                    let mut keys = changed_keys(&bridge.config, &prepared.config);
                    if bridge.tls_digest != prepared.tls_digest {
                        keys.push("tls files");
                    }
                    let cursor = bridge
                        .status
                        .cursor
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let (status, resume) = Self::halt(bridge).await;
                    let resume = resume.unwrap_or(Resume {
                        cursor,
                        replay: None,
                        resumed: true,
                    });
                    info!(
                        bridge = name,
                        changed = ?keys,
                        cursor = resume.cursor,
                        "bridge restarting with new settings"
                    );
                    self.launch_locked(&mut running, prepared, resume, Some(status));
                    changes.changed.push((name, keys));
                }
                None => {
                    let parked = self.lock_parked().remove(&name);
                    let resume = match parked {
                        Some(resume) => resume,
                        None => {
                            let tail = self.store.tail();
                            let submitted = self
                                .store
                                .submit(vec![WriteOp::CursorSet {
                                    name: super::cursor_key(&name),
                                    seq: tail,
                                }])
                                .await?;
                            self.store.wait_durable(submitted.ticket).await?;
                            Resume {
                                cursor: tail,
                                replay: None,
                                resumed: false,
                            }
                        }
                    };
                    info!(
                        bridge = name,
                        address = prepared.config.address,
                        cursor = resume.cursor,
                        log_entries_behind = self.store.tail().saturating_sub(resume.cursor),
                        resumed = resume.resumed,
                        "bridge starting"
                    );
                    self.launch_locked(&mut running, prepared, resume, None);
                    changes.added.push(name);
                }
            }
        }
        changes.added.sort();
        changes.changed.sort();
        Ok(changes)
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Resume>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The keys of a `[[bridge]]` table that differ between `old` and `new` (values are not
/// named: some are secrets).
fn changed_keys(old: &BridgeConfig, new: &BridgeConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    macro_rules! compare {
        ($($key:ident),* $(,)?) => {
            $(
                if old.$key != new.$key {
                    keys.push(stringify!($key));
                }
            )*
        };
    }
    compare!(
        address,
        client_id,
        username,
        password,
        protocol,
        keep_alive,
        tls,
        topics,
        remote_prefix,
        qos,
        mode,
        envelope_format,
        envelope_topic,
        batch,
        inflight,
        gateway_id,
        reconnect,
        replay,
        outbox,
        compression,
        compression_level,
    );
    if keys.is_empty() && old != new {
        keys.push("other");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_only_the_keys_that_differ() {
        let old: BridgeConfig = toml::from_str(
            r#"name = "cloud"
            address = "127.0.0.1:1883"
            client_id = "gw"
            topics = ["a/#"]
            password = "one""#,
        )
        .expect("valid bridge");
        let mut new = old.clone();
        assert!(changed_keys(&old, &new).is_empty());
        new.remote_prefix = "site-1/".into();
        new.password = Some("two".into());
        assert_eq!(changed_keys(&old, &new), vec!["password", "remote_prefix"]);
    }
}
