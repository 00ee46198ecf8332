//! Serde configuration of filters: the `[filters]` section ([`FilterLimitsConfig`]) and the
//! `[[pipeline]]` tables ([`PipelineConfig`]), plus the failure policy syntax.
//!
//! ```toml
//! [filters]
//! memory_limit = "16MiB"           # per filter instance
//! deadline_base = "10ms"           # per call ...
//! deadline_per_message = "20us"    # ... plus this per message in the batch
//! init_deadline = "100ms"          # per `init` call
//! cache_dir = "./tern-data/filter-cache"   # default: <data_dir>/filter-cache
//! max_instances_per_filter = 4     # concurrent instances of one filter
//!
//! [[pipeline]]
//! topics = ["sensors/#"]
//! on_failure = "dead-letter:filters/failed"   # pass | drop | dead-letter:<topic>
//! filters = [
//!   { name = "hot", wasm = "filters/sql92.wasm", config = "temperature > 30" },
//! ]
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ByteSize, HumanDuration};

/// `[filters]`: limits and storage of the filter host, shared by every pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterLimitsConfig {
    /// Linear memory one filter instance may grow to.
    pub memory_limit: ByteSize,
    /// Time allowed to every `process` call, whatever its batch size.
    pub deadline_base: HumanDuration,
    /// Time allowed per message of the batch, on top of `deadline_base`.
    pub deadline_per_message: HumanDuration,
    /// Time allowed to one `init` call.
    pub init_deadline: HumanDuration,
    /// Where compiled filters are cached; `None` = `<data_dir>/filter-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Instances of one filter that may run at the same time (each is one `Store` with up
    /// to `memory_limit` of memory). A caller finding all of them busy waits for one.
    pub max_instances_per_filter: usize,
}

impl Default for FilterLimitsConfig {
    fn default() -> Self {
        Self {
            memory_limit: ByteSize(16 << 20),
            deadline_base: HumanDuration(Duration::from_millis(10)),
            deadline_per_message: HumanDuration(Duration::from_micros(20)),
            init_deadline: HumanDuration(Duration::from_millis(100)),
            cache_dir: None,
            max_instances_per_filter: 4,
        }
    }
}

impl FilterLimitsConfig {
    /// The cache directory with its default applied.
    pub fn cache_dir(&self, data_dir: &Path) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("filter-cache"))
    }
}

/// One `[[pipeline]]`: the filters that run, in order, on messages whose topic matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Topic filters (`+`/`#` wildcards) selecting the messages of this pipeline. A message
    /// goes through the first pipeline that matches it, and only that one.
    pub topics: Vec<String>,
    /// What happens to a message a filter fails on.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// The filters, run in order.
    pub filters: Vec<FilterConfig>,
}

/// One filter of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name used in logs, counters and errors; unique within its pipeline.
    pub name: String,
    /// A component, a wit-bindgen core module, or a `.cwasm` from `tern filter compile`.
    pub wasm: PathBuf,
    /// Handed to the filter's `init` (a selector, a route table, ...).
    #[serde(default)]
    pub config: String,
}

/// What a pipeline does with a message a filter failed on (trap, timeout, `Err`, invalid
/// verdicts). Written `"pass"`, `"drop"` or `"dead-letter:<topic>"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// The message continues as if the failing filter had kept it unchanged.
    #[default]
    Pass,
    /// The message is dropped.
    Drop,
    /// The message is published (locally, not retained) on this topic instead, with user
    /// properties `tern-filter-error` = `"<filter>: <reason>"` and `tern-original-topic`.
    DeadLetter(Arc<str>),
}

/// Prefix of the dead-letter policy.
const DEAD_LETTER_PREFIX: &str = "dead-letter:";

/// A failure policy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid failure policy {given:?}: {reason} (expected pass, drop or dead-letter:<topic>)")]
pub struct PolicyParseError {
    given: String,
    reason: &'static str,
}

impl FromStr for FailurePolicy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PolicyParseError {
            given: s.to_owned(),
            reason,
        };
        match s {
            "pass" => Ok(FailurePolicy::Pass),
            "drop" => Ok(FailurePolicy::Drop),
            _ => {
                let topic = s
                    .strip_prefix(DEAD_LETTER_PREFIX)
                    .ok_or_else(|| err("unknown policy"))?;
                if topic.starts_with('$') {
                    return Err(err("dead-letter topic must not start with `$`"));
                }
                tern_mqtt::topic::validate_topic_name(topic)
                    .map_err(|_| err("dead-letter topic is not a valid topic name"))?;
                Ok(FailurePolicy::DeadLetter(Arc::from(topic)))
            }
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailurePolicy::Pass => f.write_str("pass"),
            FailurePolicy::Drop => f.write_str("drop"),
            FailurePolicy::DeadLetter(topic) => write!(f, "{DEAD_LETTER_PREFIX}{topic}"),
        }
    }
}

impl<'de> Deserialize<'de> for FailurePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_policies_parse_and_print_back() {
        for text in ["pass", "drop", "dead-letter:filters/failed"] {
            let policy: FailurePolicy = text.parse().expect(text);
            assert_eq!(policy.to_string(), text);
        }
        assert!("dead-letter:".parse::<FailurePolicy>().is_err());
        assert!("dead-letter:a/+".parse::<FailurePolicy>().is_err());
        assert!("dead-letter:$SYS/x".parse::<FailurePolicy>().is_err());
        assert!("keep".parse::<FailurePolicy>().is_err());
    }

    #[test]
    fn pipeline_toml_deserializes_with_defaults() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            filters: FilterLimitsConfig,
            pipeline: Vec<PipelineConfig>,
        }
        let doc: Doc = toml::from_str(
            r#"
            [filters]
            memory_limit = "2MiB"
            deadline_per_message = "5us"

            [[pipeline]]
            topics = ["sensors/#"]
            on_failure = "dead-letter:dlq"
            filters = [{ name = "hot", wasm = "a.wasm", config = "x > 1" }]

            [[pipeline]]
            topics = ["b"]
            filters = [{ name = "p", wasm = "p.wasm" }]
            "#,
        )
        .expect("valid");
        assert_eq!(doc.filters.memory_limit, ByteSize(2 << 20));
        assert_eq!(doc.filters.deadline_per_message.0, Duration::from_micros(5));
        assert_eq!(doc.filters.deadline_base.0, Duration::from_millis(10));
        assert_eq!(
            doc.pipeline[0].on_failure,
            FailurePolicy::DeadLetter(Arc::from("dlq"))
        );
        assert_eq!(doc.pipeline[1].on_failure, FailurePolicy::Pass);
        assert_eq!(doc.pipeline[1].filters[0].config, "");
        let bad = toml::from_str::<PipelineConfig>(
            r#"topics = ["a"]
            filters = []
            on_falure = "drop""#,
        );
        assert!(bad.is_err());
    }
}
