#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `parse`: the rule language → [`RouteTable`], with every static check and its location.
//! - `table`: the compiled table: first-match lookup, captures, topic interpolation.
//! - `error`: [`ConfigError`] (deploy-time) and [`InvalidRoute`] (one message's route).
//! - `filter`: [`RouterFilter`], the SDK glue the component exports.

mod error;
mod filter;
mod host;
mod parse;
mod table;

pub use error::{ConfigError, ConfigErrorKind, InvalidRoute, InvalidTopic, Location};
pub use filter::RouterFilter;
pub use table::{
    Decided, Incoming, MAX_CAPTURES, MAX_DESTINATIONS, MAX_TOPIC_LEN, Outcome, Rendered, Resolved,
    RouteTable, is_valid_topic_name,
};

tern_filter::export!(RouterFilter);
