#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: option lines and selector compilation, with errors located in the whole config.
//! - `filter`: [`Sql92Filter`], the exported filter, and [`View`], the selector's view of an
//!   SDK message.

mod config;
mod filter;

pub use config::{ConfigError, OptionError, OptionErrorKind, SelectorError, compile};
pub use filter::{Sql92Filter, View};

tern_filter::export!(Sql92Filter);
