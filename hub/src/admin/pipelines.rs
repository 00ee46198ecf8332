//! Pipelines deployed through the admin API, and the modules they run: their request and
//! persisted forms, their validation, and where they live in the data directory.
//!
//! - `<data_dir>/modules/<sha256>.wasm`: uploaded filter modules, content-addressed
//!   (`PUT /modules/{sha256}`); a file's name is the SHA-256 of its bytes.
//! - `<data_dir>/api-pipelines.json`: the API's pipelines by name, each with its topics,
//!   failure policy and chain of `{name, module, config}`. Rewritten atomically (written
//!   aside, fsynced, renamed) after every deploy or removal that took effect, so a restart
//!   deploys exactly what the API last answered with.
//!
//! The configuration file never names these pipelines and a reload of it leaves them in
//! place; how both sets are combined is [`crate::reload::Deployments`]'s business.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::filter_host::{FailurePolicy, FilterConfig, PipelineConfig};

/// Largest module `PUT /modules/{sha256}` accepts.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// Longest pipeline name.
const MAX_NAME_LEN: usize = 64;
/// Version of the persisted file's layout.
const FILE_VERSION: u32 = 1;
/// File of the API's pipelines, in the data directory.
const PIPELINES_FILE: &str = "api-pipelines.json";
/// Directory of uploaded modules, in the data directory.
const MODULES_DIR: &str = "modules";

/// The SHA-256 of a module's bytes, as 64 lowercase hex digits: its name in the API and
/// in the module directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModuleId(String);

impl ModuleId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for byte in digest {
            // Writing to a String cannot fail.
            let _ = fmt::Write::write_fmt(&mut hex, format_args!("{byte:02x}"));
        }
        Self(hex)
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModuleId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.to_ascii_lowercase();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text))
        } else {
            Err(format!("{text:?} is not a SHA-256 (64 hexadecimal digits)"))
        }
    }
}

impl From<ModuleId> for String {
    fn from(id: ModuleId) -> String {
        id.0
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an API pipeline: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PipelineName(String);

impl PipelineName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PipelineName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || name.starts_with('.')
            || !name.chars().all(allowed)
        {
            return Err(format!(
                "pipeline name {name:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ - \
                 (not starting with .)"
            ));
        }
        Ok(Self(name))
    }
}

impl From<PipelineName> for String {
    fn from(name: PipelineName) -> String {
        name.0
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One filter of an API pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Name in logs, counters and errors; unique within the pipeline.
    pub name: String,
    /// The uploaded module it runs.
    pub module: ModuleId,
    /// Handed to the filter's `init`.
    #[serde(default)]
    pub config: String,
}

/// An API pipeline: the body of `PUT /filters/{name}` and its persisted form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Topic filters selecting its messages.
    pub topics: Vec<String>,
    /// `pass`, `drop` or `dead-letter:<topic>`.
    #[serde(default, serialize_with = "as_text")]
    pub on_failure: FailurePolicy,
    /// The chain, in order.
    pub filters: Vec<FilterSpec>,
}

fn as_text<S: serde::Serializer>(policy: &FailurePolicy, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(policy)
}

impl PipelineSpec {
    /// What can be checked without loading the filters. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("topics: at least one topic filter is required".into());
        }
        for (i, topic) in self.topics.iter().enumerate() {
            tern_mqtt::topic::validate_topic_filter(topic)
                .map_err(|err| format!("topics[{i}]: invalid topic filter {topic:?}: {err}"))?;
            if topic.starts_with("$share/") {
                return Err(format!(
                    "topics[{i}]: {topic:?} is a shared subscription, not a topic filter"
                ));
            }
        }
        if self.filters.is_empty() {
            return Err("filters: at least one filter is required".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, filter) in self.filters.iter().enumerate() {
            if filter.name.is_empty() {
                return Err(format!("filters[{i}].name: must not be empty"));
            }
            if !names.insert(filter.name.as_str()) {
                return Err(format!(
                    "filters[{i}].name: {:?} is used twice in this pipeline",
                    filter.name
                ));
            }
        }
        Ok(())
    }

    /// The modules this pipeline runs.
    pub fn modules(&self) -> impl Iterator<Item = &ModuleId> {
        self.filters.iter().map(|f| &f.module)
    }
}

/// The persisted file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelinesFile {
    version: u32,
    pipelines: BTreeMap<PipelineName, PipelineSpec>,
}

/// Why the persisted pipelines or a module cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PipelineStoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The pipelines file does not parse (edited by hand, or truncated by a disk fault).
    #[error("{path}: {reason} (fix or delete the file to start without API pipelines)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// An uploaded body's SHA-256 is not the one in the path.
    #[error("the body's SHA-256 is {actual}, not {expected}")]
    DigestMismatch {
        /// The id in the request path.
        expected: ModuleId,
        /// The id of the bytes received.
        actual: ModuleId,
    },
}

/// Where the API's pipelines and modules live.
#[derive(Debug, Clone)]
pub struct PipelineStore {
    file: PathBuf,
    modules: PathBuf,
}

impl PipelineStore {
    /// The store in `data_dir` (nothing is created until something is written).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            file: data_dir.join(PIPELINES_FILE),
            modules: data_dir.join(MODULES_DIR),
        }
    }

    /// The persisted pipelines file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The persisted pipelines (none when the file does not exist).
    pub fn load(&self) -> Result<BTreeMap<PipelineName, PipelineSpec>, PipelineStoreError> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BTreeMap::new());
            }
            Err(source) => {
                return Err(PipelineStoreError::Io {
                    path: self.file.clone(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| PipelineStoreError::Corrupt {
            path: self.file.clone(),
            reason,
        };
        let parsed: PipelinesFile =
            serde_json::from_str(&text).map_err(|err| corrupt(err.to_string()))?;
        if parsed.version != FILE_VERSION {
            return Err(corrupt(format!(
                "version {} is not {FILE_VERSION}",
                parsed.version
            )));
        }
        for (name, spec) in &parsed.pipelines {
            spec.validate()
                .map_err(|reason| corrupt(format!("pipeline {name}: {reason}")))?;
        }
        Ok(parsed.pipelines)
    }

    /// Replaces the persisted pipelines with `pipelines`, atomically and durably.
    pub fn save(
        &self,
        pipelines: &BTreeMap<PipelineName, PipelineSpec>,
    ) -> Result<(), PipelineStoreError> {
        let file = PipelinesFile {
            version: FILE_VERSION,
            pipelines: pipelines.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|err| PipelineStoreError::Io {
            path: self.file.clone(),
            source: std::io::Error::other(err),
        })?;
        text.push(b'\n');
        write_atomically(&self.file, &text)
    }

    /// The file of module `id`.
    pub fn module_path(&self, id: &ModuleId) -> PathBuf {
        self.modules.join(format!("{id}.wasm"))
    }

    /// Whether module `id` was uploaded.
    pub fn has_module(&self, id: &ModuleId) -> bool {
        self.module_path(id).is_file()
    }

    /// Stores `bytes` as module `expected` after checking their digest. Returns whether
    /// it was new.
    pub fn put_module(
        &self,
        expected: &ModuleId,
        bytes: &[u8],
    ) -> Result<bool, PipelineStoreError> {
        let actual = ModuleId::of(bytes);
        if actual != *expected {
            return Err(PipelineStoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if self.has_module(expected) {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.modules).map_err(|source| PipelineStoreError::Io {
            path: self.modules.clone(),
            source,
        })?;
        write_atomically(&self.module_path(expected), bytes)?;
        Ok(true)
    }

    /// The uploaded modules with their sizes, by id.
    pub fn modules(&self) -> Result<Vec<(ModuleId, u64)>, PipelineStoreError> {
        let io = |source| PipelineStoreError::Io {
            path: self.modules.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&self.modules) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io(err)),
        };
        let mut modules = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wasm"))
                .and_then(|n| ModuleId::try_from(n.to_owned()).ok())
            else {
                continue;
            };
            let len = entry.metadata().map_err(io)?.len();
            modules.push((id, len));
        }
        modules.sort();
        Ok(modules)
    }

    /// Deletes module `id`; `false` when there was none.
    pub fn delete_module(&self, id: &ModuleId) -> Result<bool, PipelineStoreError> {
        let path = self.module_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(PipelineStoreError::Io { path, source }),
        }
    }

    /// `spec` as the filter host deploys it: each filter runs its module's file.
    pub fn to_config(&self, spec: &PipelineSpec) -> PipelineConfig {
        PipelineConfig {
            topics: spec.topics.clone(),
            on_failure: spec.on_failure.clone(),
            filters: spec
                .filters
                .iter()
                .map(|f| FilterConfig {
                    name: f.name.clone(),
                    wasm: self.module_path(&f.module),
                    config: f.config.clone(),
                })
                .collect(),
        }
    }
}

/// Writes `bytes` to `path` through a file beside it: fsync, rename, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PipelineStoreError> {
    let io = |source| PipelineStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    // Makes the rename durable; not every platform can open a directory.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> PipelineSpec {
        serde_json::from_str(json).expect("valid spec")
    }

    #[test]
    fn names_and_module_ids_are_checked() {
        assert!(PipelineName::try_from("sensors-1.v2_b".to_owned()).is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(PipelineName::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let id = ModuleId::of(b"abc");
        assert_eq!(
            id.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            ModuleId::try_from(id.as_str().to_ascii_uppercase()),
            Ok(id.clone())
        );
        assert!(ModuleId::try_from("abc".to_owned()).is_err());
    }

    #[test]
    fn specs_are_validated_field_by_field() {
        let module = ModuleId::of(b"m");
        let ok = spec(&format!(
            r#"{{"topics":["a/#"],"on_failure":"drop","filters":[{{"name":"f","module":"{module}"}}]}}"#
        ));
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.on_failure, FailurePolicy::Drop);
        let twice = spec(&format!(
            r#"{{"topics":["a"],"filters":[{{"name":"f","module":"{module}"}},{{"name":"f","module":"{module}"}}]}}"#
        ));
        assert!(twice.validate().unwrap_err().starts_with("filters[1].name"));
        let bad_topic = spec(&format!(
            r#"{{"topics":["a/#/b"],"filters":[{{"name":"f","module":"{module}"}}]}}"#
        ));
        assert!(bad_topic.validate().unwrap_err().starts_with("topics[0]"));
        let unknown = serde_json::from_str::<PipelineSpec>(r#"{"topics":[],"filters":[],"x":1}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn pipelines_and_modules_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PipelineStore::new(dir.path());
        assert!(store.load().expect("no file yet").is_empty());
        let bytes = b"\0asm not really";
        let id = ModuleId::of(bytes);
        assert!(matches!(
            store.put_module(&ModuleId::of(b"other"), bytes),
            Err(PipelineStoreError::DigestMismatch { .. })
        ));
        assert!(store.put_module(&id, bytes).expect("stored"));
        assert!(!store.put_module(&id, bytes).expect("again"));
        assert_eq!(store.modules().expect("list"), vec![(id.clone(), 15)]);
        let mut pipelines = BTreeMap::new();
        pipelines.insert(
            PipelineName::try_from("p".to_owned()).expect("name"),
            spec(&format!(
                r#"{{"topics":["a"],"on_failure":"dead-letter:dlq","filters":[{{"name":"f","module":"{id}","config":"x"}}]}}"#
            )),
        );
        store.save(&pipelines).expect("saved");
        assert_eq!(store.load().expect("loaded"), pipelines);
        std::fs::write(store.file(), "{").expect("corrupt it");
        assert!(matches!(
            store.load(),
            Err(PipelineStoreError::Corrupt { .. })
        ));
        assert!(store.delete_module(&id).expect("deleted"));
        assert!(!store.delete_module(&id).expect("gone"));
    }
}
