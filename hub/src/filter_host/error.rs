//! Errors of the filter host: loading a filter ([`FilterError`]), deploying pipelines
//! ([`DeployError`]), and why one call into a guest failed ([`FailureKind`]).

use std::fmt;
use std::path::PathBuf;

/// A filter could not be loaded, compiled, validated or initialised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The bytes are neither a WebAssembly component, a core module, nor a precompiled
    /// component.
    #[error("not a WebAssembly component, core module or precompiled `.cwasm` component")]
    NotWasm,
    /// A precompiled artifact for another kind of thing (a core module) was given.
    #[error("precompiled core module given; filters are components (`tern filter compile`)")]
    PrecompiledModule,
    /// This build has no compiler and the filter is not precompiled for it.
    #[error(
        "this hub was built without the `compiler` feature: give a `.cwasm` made by \
         `tern filter compile --target <triple>` for this hub version and target"
    )]
    CompilerMissing,
    /// A core module could not be turned into a component (no `component-type` section,
    /// or its imports/exports disagree with it).
    #[error("core module cannot be made into a component: {0}")]
    Componentize(String),
    /// Cranelift rejected or failed to compile the component.
    #[error("compiling: {0}")]
    Compile(String),
    /// A precompiled artifact failed to load (other wasmtime version, target or settings).
    #[error("loading precompiled artifact: {0}")]
    Deserialize(String),
    /// The component does not implement the `tern:filter/filter` world.
    #[error("does not implement world `tern:filter/filter@0.2.0`: {0}")]
    World(String),
    /// Instantiating the component failed.
    #[error("instantiating: {0}")]
    Instantiate(String),
    /// `init` returned an error: the filter refused its configuration.
    #[error("init refused the config: {0}")]
    InitRefused(String),
    /// `init` trapped, ran out of time or memory.
    #[error("init failed ({kind}): {detail}")]
    InitFailed {
        /// How it failed.
        kind: FailureKind,
        /// Wasmtime's description.
        detail: String,
    },
    /// A later instance's `init` asked for different needs, or declared other templates,
    /// than the first one.
    #[error("init is not deterministic: needs or templates changed between instances")]
    InitUnstable,
    /// `init` declared a topic template the hub refuses.
    #[error("init declared an invalid template {index}: {reason}")]
    Template {
        /// Its index in the declared list.
        index: usize,
        /// What is wrong with it.
        reason: tern_filter_abi::TemplateError,
    },
    /// The engine could not be configured (bad target triple, unsupported setting).
    #[error("engine configuration: {0}")]
    Engine(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why one call into a guest failed. Each kind has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, stack overflow).
    Trap,
    /// The call ran past its epoch deadline.
    Timeout,
    /// `process` returned `Err`.
    Error,
    /// The verdict buffer did not parse, had the wrong count, or asked for something
    /// invalid (a topic that is not a valid topic name, a `$` topic).
    InvalidVerdicts,
    /// The guest hit its memory limit (and trapped because of it).
    Memory,
}

impl FailureKind {
    /// A short stable name, used in logs and dead-letter properties.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Error => "error",
            FailureKind::InvalidVerdicts => "invalid verdicts",
            FailureKind::Memory => "memory limit",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed call: its kind and a description for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// How it failed.
    pub kind: FailureKind,
    /// What happened, as the guest or wasmtime described it.
    pub detail: String,
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// A set of pipelines could not be deployed; the previous set stays in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// A filter of a pipeline could not be loaded or refused its config.
    #[error("pipeline {pipeline}: filter `{filter}` ({}): {source}", file.display())]
    Filter {
        /// Index of the pipeline in the configuration (0-based).
        pipeline: usize,
        /// The filter's name.
        filter: String,
        /// Its wasm file.
        file: PathBuf,
        /// What went wrong.
        #[source]
        source: FilterError,
    },
    /// A pipeline setting is invalid (topic filter, failure policy, filter names).
    #[error("pipeline {pipeline}: {reason}")]
    Pipeline {
        /// Index of the pipeline in the configuration (0-based).
        pipeline: usize,
        /// What is wrong.
        reason: String,
    },
}
