//! The packaged example configuration (`packaging/tern.toml`) against the hub's real loader.
//!
//! The example is what a gateway operator starts from, so it must stay loadable, its active
//! values must be the built-in defaults, and it must show every key the hub accepts. The
//! keys the hub accepts are not written down here: [`schema_keys`] reads them from the
//! serde field lists of the configuration structs themselves, so a key added to any of
//! them fails [`example_shows_every_key`] until the example documents it.
//!
//! Conventions of the example that these tests rely on: a setting without a default (or
//! only worth setting sometimes) is commented out as `# key = value` with exactly one `#`
//! and one space; a table that is not active is commented out the same way
//! (`# [[bridge]]`). Prose comments never start with `identifier =` or `[`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer as _, Visitor};
use tern_hub::config::Config;

/// Path of the example configuration in the source tree.
fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/tern.toml")
}

fn example_text() -> String {
    let path = example_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn example_loads_and_equals_the_built_in_defaults() {
    let path = example_path();
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let defaults = Config {
        source: Some(path),
        ..Config::default()
    };
    assert_eq!(
        loaded, defaults,
        "the active settings of packaging/tern.toml must be the built-in defaults"
    );
}

#[test]
fn tern_check_config_accepts_the_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("check-config")
        .arg(example_path())
        .output()
        .expect("running tern check-config");
    assert!(
        out.status.success(),
        "tern check-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn commented_out_settings_are_known_keys_with_valid_values() {
    let activated = activate(&example_text());
    // Types and key names only: commented-out alternatives (TLS on a plain listener, both
    // `token` and `token_file`) may contradict each other, which validation would refuse.
    if let Err(err) = toml::from_str::<Config>(&activated) {
        panic!("packaging/tern.toml with every setting uncommented: {err}");
    }
}

#[test]
fn example_shows_every_key() {
    let schema = schema_keys();
    let activated = activate(&example_text());
    let table: toml::Table = toml::from_str(&activated)
        .unwrap_or_else(|e| panic!("packaging/tern.toml, uncommented, is not TOML: {e}"));
    let mut shown = BTreeSet::new();
    collect_keys(&table, "", &mut shown);
    // A key counts as shown when it or a key below it appears (a table whose type reads
    // itself as a map shows up in the schema as one key).
    let missing: Vec<&String> = schema
        .iter()
        .filter(|key| {
            !shown.contains(*key) && !shown.iter().any(|s| s.starts_with(&format!("{key}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "packaging/tern.toml does not show these keys (add each, active with its default or \
         commented out as `# key = value`, with a comment saying what it does): {missing:?}"
    );
}

#[test]
fn every_setting_is_explained() {
    let mut unexplained = Vec::new();
    let mut explained = false;
    for (number, line) in example_text().lines().enumerate() {
        match classify(line) {
            Line::Prose => explained = true,
            Line::Blank | Line::Header => explained = false,
            Line::Setting if explained => {}
            Line::Setting => unexplained.push(format!("{}: {line}", number + 1)),
        }
    }
    assert!(
        unexplained.is_empty(),
        "settings in packaging/tern.toml without a comment above them:\n{}",
        unexplained.join("\n")
    );
}

/// The schema walk itself: it must see nested tables, optional tables and arrays of tables,
/// or the completeness test above would pass vacuously.
#[test]
fn schema_walk_reaches_nested_keys() {
    let schema = schema_keys();
    for key in [
        "data_dir",
        "listener.bind",
        "listener.tls.client_ca",
        "listener.websocket.path",
        "session.max_packet_size",
        "store.fsync_interval",
        "filters.cache_dir",
        "pipeline.filters.wasm",
        "bridge.tls.ca",
        "bridge.batch.linger",
        "admin.token_file",
    ] {
        assert!(schema.contains(key), "schema walk missed {key}: {schema:?}");
    }
    assert!(!schema.contains("source"), "`source` is not a key");
}

/// What one line of the example is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Blank,
    /// A comment that is not a commented-out setting or header.
    Prose,
    /// `[table]` or `[[array]]`, active or commented out.
    Header,
    /// `key = value`, active or commented out.
    Setting,
}

fn classify(line: &str) -> Line {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Line::Blank;
    }
    let body = match commented_out(line) {
        Some(body) => body,
        None if trimmed.starts_with('#') => return Line::Prose,
        None => trimmed,
    };
    if body.starts_with('[') {
        Line::Header
    } else {
        Line::Setting
    }
}

/// The setting or header behind `# ` on a commented-out line.
fn commented_out(line: &str) -> Option<&str> {
    let body = line.strip_prefix("# ")?;
    let is_header = body.starts_with('[')
        && body.trim_end().ends_with(']')
        && body
            .trim()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c));
    let key_len = body
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(body.len());
    let is_setting = key_len > 0 && body[key_len..].trim_start().starts_with('=');
    (is_header || is_setting).then_some(body)
}

/// The example with every commented-out setting and header made active.
fn activate(text: &str) -> String {
    text.lines()
        .map(|line| commented_out(line).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dotted paths of every value in `table`; arrays of tables are looked into, their
/// elements sharing the array's path (`bridge.tls.ca`).
fn collect_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => collect_keys(inner, &format!("{path}."), out),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        collect_keys(inner, &format!("{path}."), out);
                    }
                }
                out.insert(path);
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

/// Every key [`Config`] accepts, as dotted paths; the elements of arrays of tables share
/// the array's path (`listener.bind`), as in [`collect_keys`].
///
/// serde's derive hands each struct's field names to `deserialize_struct`. [`Probe`] is a
/// deserializer that records them and then walks down one key path: into each field of a
/// struct it has seen, through `Option`s and the first element of sequences. Each walk ends
/// with an error once it has recorded what it came for (or reached a scalar), so no value
/// is ever built; the walk explores one path per run of `Config::deserialize`.
fn schema_keys() -> BTreeSet<String> {
    let mut tables: BTreeMap<Vec<&'static str>, &'static [&'static str]> = BTreeMap::new();
    let mut pending: Vec<Vec<&'static str>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let found = RefCell::new(None);
        let probe = Probe {
            rest: &path,
            found: &found,
        };
        // Always an error: the walk stops once it has looked at the end of `path`.
        let _ = Config::deserialize(probe);
        if let Some(fields) = found.into_inner() {
            for field in fields {
                let mut child = path.clone();
                child.push(*field);
                pending.push(child);
            }
            tables.insert(path, fields);
        }
    }
    let mut keys = BTreeSet::new();
    for (path, fields) in &tables {
        for field in *fields {
            let mut key = path.clone();
            key.push(field);
            keys.insert(key.join("."));
        }
    }
    keys
}

/// Ends every walk of [`Probe`]; its message is never shown.
#[derive(Debug)]
struct WalkEnd;

impl fmt::Display for WalkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk ended")
    }
}

impl std::error::Error for WalkEnd {}

impl de::Error for WalkEnd {
    fn custom<T: fmt::Display>(_: T) -> Self {
        WalkEnd
    }
}

/// Deserializer that walks down `rest` and records the field list of the struct found at
/// its end in `found`.
#[derive(Clone, Copy)]
struct Probe<'a> {
    rest: &'a [&'static str],
    found: &'a RefCell<Option<&'static [&'static str]>>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = WalkEnd;

    /// A scalar, map or enum: not a table with a field list.
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WalkEnd> {
        Err(WalkEnd)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkEnd> {
        match self.rest.split_first() {
            None => {
                *self.found.borrow_mut() = Some(fields);
                Err(WalkEnd)
            }
            Some((key, rest)) => visitor.visit_map(OneEntry {
                key: Some(key),
                value: Probe {
                    rest,
                    found: self.found,
                },
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkEnd> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkEnd> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkEnd> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

/// A map with the one key a [`Probe`] walks into.
struct OneEntry<'a> {
    key: Option<&'static str>,
    value: Probe<'a>,
}

impl<'de> de::MapAccess<'de> for OneEntry<'_> {
    type Error = WalkEnd;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkEnd> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WalkEnd> {
        seed.deserialize(self.value)
    }
}

/// A sequence whose one element a [`Probe`] walks into.
struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = WalkEnd;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, WalkEnd> {
        match self.0.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}
