//! The password file (`user:$argon2id$...` lines), its editing by `tern passwd`, and the
//! verification of CONNECT passwords off the async runtime.
//!
//! Hashes are PHC strings of Argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes,
//! 1 lane, 16-byte random salt). Verifying one takes tens of milliseconds on purpose, so
//! [`Verifier`] runs it on the blocking pool behind a semaphore (at most one verification
//! per core at a time: a CONNECT storm queues there instead of starving the runtime or
//! spawning hundreds of threads), and remembers a successful verification for a short while
//! as a keyed SHA-256 digest of (user, hash, password) — never the password itself.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// Hash verified for unknown users, made on first use.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// How long a successful verification is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most remembered verifications; the cache is emptied when it is full.
const CACHE_CAPACITY: usize = 10_000;

/// Why a password file cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A line is not `user:$argon2...`.
    #[error("{path}:{line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A username `tern passwd` cannot store.
    #[error("invalid username {0:?}: must be non-empty and contain no ':' or line break")]
    Username(String),
    /// Hashing failed (should not happen with valid parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// A parsed password file: username → PHC hash string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Arc<str>>,
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, PasswordError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| PasswordError::Syntax {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// Parses the text of a password file; `(line, reason)` on failure. Blank lines and
    /// lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err((index + 1, "expected `user:$argon2id$...`".into()));
            };
            if user.is_empty() {
                return Err((index + 1, "empty username".into()));
            }
            let parsed = PasswordHash::new(hash)
                .map_err(|err| (index + 1, format!("user {user:?}: not a PHC hash: {err}")))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err((
                    index + 1,
                    format!(
                        "user {user:?}: algorithm {} is not supported (argon2id expected)",
                        parsed.algorithm
                    ),
                ));
            }
            if users.insert(user.to_owned(), Arc::from(hash)).is_some() {
                return Err((index + 1, format!("user {user:?} listed twice")));
            }
        }
        Ok(Self { users })
    }

    /// The hash of `user`, if listed.
    pub fn hash_of(&self, user: &str) -> Option<&Arc<str>> {
        self.users.get(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Users added, removed or with a changed hash, compared with `old` (for reload logs).
    pub fn changes_from(&self, old: &Self) -> PasswordChanges {
        let mut changes = PasswordChanges::default();
        for (user, hash) in &self.users {
            match old.users.get(user) {
                None => changes.added += 1,
                Some(previous) if previous != hash => changes.changed += 1,
                Some(_) => {}
            }
        }
        changes.removed = old
            .users
            .keys()
            .filter(|u| !self.users.contains_key(*u))
            .count();
        changes
    }
}

/// Counts of a password file reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PasswordChanges {
    /// New users.
    pub added: usize,
    /// Users gone.
    pub removed: usize,
    /// Users with a new password.
    pub changed: usize,
}

impl PasswordChanges {
    /// Whether anything changed.
    pub fn any(&self) -> bool {
        self.added + self.removed + self.changed > 0
    }
}

/// Hashes `password` with Argon2id and a fresh random salt (PHC string).
pub fn hash_password(password: &[u8]) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| PasswordError::Hash(err.to_string()))
}

/// Whether `password` matches the PHC `hash` (slow: run it off the runtime).
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// What `tern passwd` does to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswdAction<'a> {
    /// Add the user or replace their password.
    Set(&'a [u8]),
    /// Remove the user.
    Delete,
}

/// What [`update_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswdOutcome {
    /// The user was added.
    Added,
    /// The user's password was replaced.
    Updated,
    /// The user was removed.
    Deleted,
    /// `Delete` of a user that is not in the file (file unchanged).
    NotFound,
}

/// Adds, updates or deletes `user` in the password file at `path` (created if missing).
/// Other lines, comments included, are kept as they are. The new file is written beside
/// the old one with mode 0600, synced and renamed over it, so a reader never sees half a
/// file and a crash leaves the old or the new one.
pub fn update_file(
    path: &Path,
    user: &str,
    action: PasswdAction<'_>,
) -> Result<PasswdOutcome, PasswordError> {
    if user.is_empty() || user.contains([':', '\n', '\r']) || user.trim() != user {
        return Err(PasswordError::Username(user.to_owned()));
    }
    let io_error = |source| PasswordError::Io {
        path: path.to_path_buf(),
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(io_error(err)),
    };
    // Refuse to rewrite a file the hub would not load.
    PasswordFile::parse(&old).map_err(|(line, reason)| PasswordError::Syntax {
        path: path.to_path_buf(),
        line,
        reason,
    })?;
    let new_line = match action {
        PasswdAction::Set(password) => Some(format!("{user}:{}", hash_password(password)?)),
        PasswdAction::Delete => None,
    };
    let mut found = false;
    let mut lines = Vec::new();
    for line in old.lines() {
        let is_user = line
            .trim()
            .split_once(':')
            .is_some_and(|(name, _)| name == user && !line.trim().starts_with('#'));
        if is_user {
            found = true;
            if let Some(replacement) = &new_line {
                lines.push(replacement.clone());
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    let outcome = match (&new_line, found) {
        (Some(_), true) => PasswdOutcome::Updated,
        (Some(line), false) => {
            lines.push(line.clone());
            PasswdOutcome::Added
        }
        (None, true) => PasswdOutcome::Deleted,
        (None, false) => return Ok(PasswdOutcome::NotFound),
    };
    let mut text = lines.join("\n");
    text.push('\n');
    write_atomically(path, text.as_bytes()).map_err(io_error)?;
    Ok(outcome)
}

/// Writes `path.tmp` with mode 0600, syncs it, renames it over `path` and syncs the
/// directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: not every platform can open a directory for syncing.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// A remembered successful verification.
#[derive(Debug, Clone)]
struct Remembered {
    digest: [u8; 32],
    at: Instant,
}

/// Verifies CONNECT passwords on the blocking pool, a bounded number at a time, with a
/// short-lived cache of successes.
#[derive(Debug)]
pub struct Verifier {
    permits: Semaphore,
    cache: Mutex<HashMap<String, Remembered>>,
    /// Random per process: cached digests are useless outside it.
    key: [u8; 32],
}

impl Default for Verifier {
    fn default() -> Self {
        let parallel = std::thread::available_parallelism().map_or(1, usize::from);
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self {
            permits: Semaphore::new(parallel),
            cache: Mutex::new(HashMap::new()),
            key,
        }
    }
}

impl Verifier {
    fn digest(&self, user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
        let mut sha = Sha256::new();
        sha.update(self.key);
        sha.update((user.len() as u64).to_le_bytes());
        sha.update(user.as_bytes());
        sha.update((hash.len() as u64).to_le_bytes());
        sha.update(hash.as_bytes());
        sha.update(password);
        sha.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Spends the time of one verification on a user that does not exist (always fails).
    pub async fn verify_unknown(&self, password: Vec<u8>) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            let hash = DUMMY_HASH.get_or_init(|| {
                hash_password(b"tern: no such user").unwrap_or_else(|_| String::new())
            });
            verify_password(hash, &password)
        })
        .await;
    }

    /// Whether `password` matches `hash` for `user`.
    pub async fn verify(&self, user: &str, hash: Arc<str>, password: Vec<u8>) -> bool {
        let digest = self.digest(user, &hash, &password);
        let now = Instant::now();
        if let Some(hit) = self.lock().get(user)
            && hit.digest == digest
            && now.duration_since(hit.at) < CACHE_TTL
        {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        let mut cache = self.lock();
        if ok {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(user.to_owned(), Remembered { digest, at: now });
        } else {
            cache.remove(user);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_its_password() {
        let hash = hash_password(b"s3cret").expect("hashes");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, b"s3cret"));
        assert!(!verify_password(&hash, b"s3cret "));
        assert!(!verify_password("not a hash", b"s3cret"));
    }

    #[test]
    fn parse_reports_the_bad_line() {
        let hash = hash_password(b"x").expect("hashes");
        let text = format!("# comment\nalice:{hash}\n\nbob\n");
        assert_eq!(PasswordFile::parse(&text).unwrap_err().0, 4);
        let text = format!("alice:{hash}\nalice:{hash}\n");
        assert!(PasswordFile::parse(&text).unwrap_err().1.contains("twice"));
        assert!(PasswordFile::parse("carol:plaintext\n").is_err());
        let file = PasswordFile::parse(&format!("alice:{hash}\n")).expect("valid");
        assert_eq!(file.hash_of("alice").map(|h| &**h), Some(hash.as_str()));
    }

    #[test]
    fn update_file_adds_updates_deletes_with_mode_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("passwd");
        std::fs::write(&path, "# operators\n").expect("write");
        let set = |pw: &'static [u8]| update_file(&path, "alice", PasswdAction::Set(pw));
        assert_eq!(set(b"one").expect("adds"), PasswdOutcome::Added);
        assert_eq!(set(b"two").expect("updates"), PasswdOutcome::Updated);
        let file = PasswordFile::load(&path).expect("loads");
        assert_eq!(file.len(), 1);
        let hash = file.hash_of("alice").expect("alice listed");
        assert!(verify_password(hash, b"two"));
        assert!(
            std::fs::read_to_string(&path)
                .expect("read")
                .starts_with("# operators\n")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let delete = update_file(&path, "alice", PasswdAction::Delete).expect("deletes");
        assert_eq!(delete, PasswdOutcome::Deleted);
        assert!(PasswordFile::load(&path).expect("loads").is_empty());
        let missing = update_file(&path, "alice", PasswdAction::Delete).expect("no-op");
        assert_eq!(missing, PasswdOutcome::NotFound);
        assert!(update_file(&path, "a:b", PasswdAction::Delete).is_err());
    }

    #[tokio::test]
    async fn verifier_accepts_and_caches_only_the_right_password() {
        let verifier = Verifier::default();
        let hash: Arc<str> = hash_password(b"pw").expect("hashes").into();
        assert!(
            verifier
                .verify("u", Arc::clone(&hash), b"pw".to_vec())
                .await
        );
        assert!(
            verifier
                .verify("u", Arc::clone(&hash), b"pw".to_vec())
                .await
        );
        assert!(
            !verifier
                .verify("u", Arc::clone(&hash), b"nope".to_vec())
                .await
        );
        assert!(!verifier.verify("v", hash, b"nope".to_vec()).await);
    }
}
