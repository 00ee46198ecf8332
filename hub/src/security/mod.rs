//! Listener security: who may connect on which listener, and what each client may do.
//!
//! - [`config`]: the `[[listener]]` keys (protocol, TLS, WebSocket, authentication files)
//!   and the anonymous-access rule.
//! - [`tls`]: rustls server configuration and client-certificate identities.
//! - [`password`]: the password file, `tern passwd`, and bounded off-runtime verification.
//! - [`acl`]: the ACL file and its rules compiled per client.
//!
//! [`Security`] is built once at start-up from the configuration (every file read and
//! checked, errors naming the listener key, file and reason) and holds one
//! [`ListenerSecurity`] per listener. Password and ACL files shared by several listeners
//! are read once. [`Security::reload`] (SIGHUP) re-reads them: new connections use the new
//! files; connected clients keep their login, and their ACL is recompiled from the new file
//! before their next packet is handled (see `docs/security.md`).

pub mod acl;
pub mod config;
pub mod password;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::config::{Config, ConfigError, ListenerConfig};
use crate::metrics::Metrics;
use acl::{AclFile, ClientAcl, Decision, Operation, Principal};
use config::{AnonymousPolicy, IdentitySource, ListenerProtocol};
use password::{PasswordFile, Verifier};

/// A file shared by listeners, swapped whole on reload.
#[derive(Debug)]
pub struct Shared<T> {
    path: PathBuf,
    current: ArcSwap<T>,
    /// Bumped by every reload that changed the file's content.
    generation: AtomicU64,
}

impl<T> Shared<T> {
    fn new(path: PathBuf, value: T) -> Self {
        Self {
            path,
            current: ArcSwap::from_pointee(value),
            generation: AtomicU64::new(0),
        }
    }

    /// The file as last loaded.
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Changes with every reload that changed the content.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn store(&self, value: T) {
        self.current.store(Arc::new(value));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Open connections per source address of one listener.
#[derive(Debug)]
pub struct PerIpLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A slot of [`PerIpLimit`], released when dropped.
#[derive(Debug)]
pub struct IpSlot {
    limit: Arc<PerIpLimit>,
    ip: IpAddr,
}

impl PerIpLimit {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for `ip`, or `None` when it already has `max` connections open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limit: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limit.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The security of one listener, shared by its connections.
#[derive(Debug)]
pub struct ListenerSecurity {
    /// Position in `[[listener]]`, for log lines.
    pub index: usize,
    /// What the socket carries.
    pub protocol: ListenerProtocol,
    /// TLS server configuration (`mqtt+tls`, `wss`).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// WebSocket upgrade path (`ws`, `wss`).
    pub websocket_path: String,
    /// Certificate field used as username, when `use_identity_as_username`.
    pub identity: Option<IdentitySource>,
    /// Per-source-address limit, when `max_connections_per_ip` is set.
    pub per_ip: Option<Arc<PerIpLimit>>,
    anonymous: AnonymousPolicy,
    passwords: Option<Arc<Shared<PasswordFile>>>,
    acl: Option<Arc<Shared<AclFile>>>,
    verifier: Arc<Verifier>,
}

/// A CONNECT refused by authentication: the v5 reason code (the codec maps it to the
/// 3.1.1 return code) and the text for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRefusal {
    /// 0x86 Bad User Name or Password (3.1.1: 0x04) or 0x87 Not authorized (3.1.1: 0x05).
    pub code: u8,
    /// Why, for the log and the v5 Reason String.
    pub text: &'static str,
}

/// 0x86 Bad User Name or Password.
pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
/// 0x87 Not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;

/// What a CONNECT presents to authentication.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// Identity read from a verified client certificate.
    pub certificate: Option<&'a str>,
    /// CONNECT username.
    pub username: Option<&'a str>,
    /// CONNECT password.
    pub password: Option<&'a [u8]>,
}

impl ListenerSecurity {
    /// Decides a CONNECT: `Ok(username)` (`None`: anonymous) or the refusal. Failures are
    /// counted; the caller logs them.
    pub async fn authenticate(
        &self,
        credentials: Credentials<'_>,
        metrics: &Metrics,
    ) -> Result<Option<Arc<str>>, AuthRefusal> {
        if self.identity.is_some()
            && let Some(identity) = credentials.certificate
        {
            return Ok(Some(Arc::from(identity)));
        }
        let Some(username) = credentials.username else {
            if self.anonymous == AnonymousPolicy::Allowed {
                return Ok(None);
            }
            metrics.security.anonymous_refused.inc();
            return Err(AuthRefusal {
                code: NOT_AUTHORIZED,
                text: "anonymous clients are not allowed on this listener",
            });
        };
        let Some(passwords) = &self.passwords else {
            // No password file: the username is taken as given (anonymous access allowed),
            // or the client is refused like an anonymous one.
            if self.anonymous == AnonymousPolicy::Allowed {
                return Ok(Some(Arc::from(username)));
            }
            metrics.security.auth_failed.inc();
            return Err(AuthRefusal {
                code: BAD_USER_NAME_OR_PASSWORD,
                text: "this listener does not accept passwords",
            });
        };
        let file = passwords.load();
        let verified = match (file.hash_of(username), credentials.password) {
            (Some(hash), Some(password)) => {
                self.verifier
                    .verify(username, Arc::clone(hash), password.to_vec())
                    .await
            }
            (None, Some(password)) => {
                // Same cost as a known user, so response times do not reveal who exists.
                self.verifier.verify_unknown(password.to_vec()).await;
                false
            }
            (_, None) => false,
        };
        if verified {
            Ok(Some(Arc::from(username)))
        } else {
            metrics.security.auth_failed.inc();
            Err(AuthRefusal {
                code: BAD_USER_NAME_OR_PASSWORD,
                text: "bad user name or password",
            })
        }
    }

    /// The ACL of a client that passed authentication; `None` when the listener has no ACL
    /// file (everything allowed, nothing checked).
    pub fn client_acl(&self, username: Option<&Arc<str>>, client_id: &str) -> Option<AclState> {
        let shared = Arc::clone(self.acl.as_ref()?);
        let generation = shared.generation();
        let compiled = ClientAcl::compile(
            &shared.load(),
            Principal {
                username: username.map(|u| &**u),
                client_id,
            },
        );
        Some(AclState {
            shared,
            generation,
            compiled,
            username: username.cloned(),
            client_id: Arc::from(client_id),
            denials: DenialLog::default(),
        })
    }
}

/// Distinct denials a client logs in full; later ones are logged at power-of-two totals.
const LOGGED_DENIALS_PER_CLIENT: usize = 16;

/// Rate limit of ACL denial log lines for one client.
#[derive(Debug, Default)]
struct DenialLog {
    seen: HashSet<(Operation, String)>,
    total: u64,
}

/// The ACL of one connected client: its compiled rules, recompiled when the file is
/// reloaded, and its denial log limiter.
#[derive(Debug)]
pub struct AclState {
    shared: Arc<Shared<AclFile>>,
    generation: u64,
    compiled: ClientAcl,
    username: Option<Arc<str>>,
    client_id: Arc<str>,
    denials: DenialLog,
}

impl AclState {
    /// Recompiles the rules if the file was reloaded since; returns whether it was.
    pub fn refresh(&mut self) -> bool {
        let generation = self.shared.generation();
        if generation == self.generation {
            return false;
        }
        self.generation = generation;
        self.compiled = ClientAcl::compile(
            &self.shared.load(),
            Principal {
                username: self.username.as_deref(),
                client_id: &self.client_id,
            },
        );
        true
    }

    /// Checks a topic name for `op`; a denial is logged (rate-limited) but not counted.
    pub fn check_topic(&mut self, topic: &str, op: Operation) -> bool {
        match self.compiled.check_topic(topic, op) {
            Decision::Allowed => true,
            denied => {
                self.log_denial(op, topic, &denied);
                false
            }
        }
    }

    /// Checks a SUBSCRIBE filter; a denial is logged (rate-limited) but not counted.
    pub fn check_subscribe(&mut self, filter: &str) -> bool {
        match self.compiled.check_subscribe(filter) {
            Decision::Allowed => true,
            denied => {
                self.log_denial(Operation::Read, filter, &denied);
                false
            }
        }
    }

    fn log_denial(&mut self, op: Operation, topic: &str, decision: &Decision) {
        let log = &mut self.denials;
        log.total += 1;
        let first =
            log.seen.len() < LOGGED_DENIALS_PER_CLIENT && log.seen.insert((op, topic.to_owned()));
        if first || log.total.is_power_of_two() {
            let rule = match decision {
                Decision::Denied(Some(rule)) => format!("deny {rule}"),
                _ => "no rule grants it".to_owned(),
            };
            warn!(
                operation = op.as_str(),
                topic,
                rule,
                denials_total = log.total,
                "ACL denied"
            );
        }
    }
}

/// The security of every listener.
#[derive(Debug)]
pub struct Security {
    listeners: Vec<Arc<ListenerSecurity>>,
    passwords: Vec<Arc<Shared<PasswordFile>>>,
    acls: Vec<Arc<Shared<AclFile>>>,
}

fn invalid(config: &Config, key: String, reason: String) -> ConfigError {
    ConfigError::Invalid {
        file: config
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<default>")),
        key,
        reason,
    }
}

impl Security {
    /// Reads every listener's TLS, password and ACL files and resolves its anonymous policy.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let verifier = Arc::new(Verifier::default());
        let mut passwords: Vec<Arc<Shared<PasswordFile>>> = Vec::new();
        let mut acls: Vec<Arc<Shared<AclFile>>> = Vec::new();
        let mut listeners = Vec::with_capacity(config.listener.len());
        for (index, listener) in config.listener.iter().enumerate() {
            let key = |name: &str| format!("listener[{index}].{name}");
            let anonymous = listener
                .security_keys()
                .anonymous_policy()
                .map_err(|reason| invalid(config, key("allow_anonymous"), reason))?;
            let tls = match &listener.tls {
                Some(settings) if listener.protocol.uses_tls() => Some(
                    tls::server_config(settings)
                        .map_err(|err| invalid(config, key("tls"), err.to_string()))?,
                ),
                _ => None,
            };
            let password_file = match &listener.password_file {
                Some(path) => Some(shared(&mut passwords, path, || {
                    PasswordFile::load(path)
                        .map_err(|err| invalid(config, key("password_file"), err.to_string()))
                })?),
                None => None,
            };
            let acl_file = match &listener.acl_file {
                Some(path) => Some(shared(&mut acls, path, || {
                    AclFile::load(path)
                        .map_err(|err| invalid(config, key("acl_file"), err.to_string()))
                })?),
                None => None,
            };
            listeners.push(Arc::new(ListenerSecurity {
                index,
                protocol: listener.protocol,
                tls,
                websocket_path: listener.websocket.path.clone(),
                identity: listener
                    .tls
                    .as_ref()
                    .filter(|t| t.use_identity_as_username)
                    .map(|t| t.identity),
                per_ip: (listener.max_connections_per_ip > 0).then(|| {
                    Arc::new(PerIpLimit {
                        max: listener.max_connections_per_ip,
                        open: Mutex::new(HashMap::new()),
                    })
                }),
                anonymous,
                passwords: password_file,
                acl: acl_file,
                verifier: Arc::clone(&verifier),
            }));
            log_listener(index, listener, anonymous);
        }
        Ok(Self {
            listeners,
            passwords,
            acls,
        })
    }

    /// The security of `config.listener[index]` (the last one past the end).
    pub fn listener(&self, index: usize) -> Option<Arc<ListenerSecurity>> {
        self.listeners
            .get(index)
            .or(self.listeners.last())
            .map(Arc::clone)
    }

    /// Re-reads every password and ACL file. A file that fails to load keeps its previous
    /// content (logged with the reason). Logs what changed.
    pub fn reload(&self) {
        for shared in &self.passwords {
            match PasswordFile::load(&shared.path) {
                Ok(new) => {
                    let changes = new.changes_from(&shared.load());
                    if changes.any() {
                        info!(
                            file = %shared.path.display(),
                            users = new.len(),
                            added = changes.added,
                            removed = changes.removed,
                            changed = changes.changed,
                            "password file reloaded; new connections use it"
                        );
                        shared.store(new);
                    } else {
                        info!(file = %shared.path.display(), "password file unchanged");
                    }
                }
                Err(err) => {
                    warn!(cause = %err, "password file not reloaded; the previous one stays");
                }
            }
        }
        for shared in &self.acls {
            match AclFile::load(&shared.path) {
                Ok(new) => {
                    if *shared.load() == new {
                        info!(file = %shared.path.display(), "ACL file unchanged");
                    } else {
                        info!(
                            file = %shared.path.display(),
                            rules = new.rule_count(),
                            "ACL file reloaded; applies to connected clients from their next packet"
                        );
                        shared.store(new);
                    }
                }
                Err(err) => warn!(cause = %err, "ACL file not reloaded; the previous one stays"),
            }
        }
    }

    /// Reloads the files on every SIGHUP until shutdown.
    pub async fn watch_hangup(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        if self.passwords.is_empty() && self.acls.is_empty() {
            return;
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hangup = match signal(SignalKind::hangup()) {
                Ok(signal) => signal,
                Err(err) => {
                    warn!(cause = %err, "cannot install the SIGHUP handler for password/ACL reload");
                    return;
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.triggered() => return,
                    got = hangup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        info!("SIGHUP: reloading password and ACL files");
                        self.reload();
                    }
                }
            }
        }
        #[cfg(not(unix))]
        shutdown.triggered().await;
    }
}

/// The entry of `path` in `files`, loading it on first use.
fn shared<T>(
    files: &mut Vec<Arc<Shared<T>>>,
    path: &Path,
    load: impl FnOnce() -> Result<T, ConfigError>,
) -> Result<Arc<Shared<T>>, ConfigError> {
    if let Some(existing) = files.iter().find(|f| f.path == path) {
        return Ok(Arc::clone(existing));
    }
    let entry = Arc::new(Shared::new(path.to_path_buf(), load()?));
    files.push(Arc::clone(&entry));
    Ok(entry)
}

fn log_listener(index: usize, listener: &ListenerConfig, anonymous: AnonymousPolicy) {
    info!(
        listener = index,
        bind = %listener.bind,
        protocol = listener.protocol.as_str(),
        client_certificates = listener
            .tls
            .as_ref()
            .map_or("off", |t| match (&t.client_ca, t.require_client_cert) {
                (None, _) => "off",
                (Some(_), false) => "optional",
                (Some(_), true) => "required",
            }),
        password_file = listener.password_file.as_ref().map(|p| p.display().to_string()),
        acl_file = listener.acl_file.as_ref().map(|p| p.display().to_string()),
        anonymous = matches!(anonymous, AnonymousPolicy::Allowed),
        "listener security"
    );
}
