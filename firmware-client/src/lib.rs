#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

#[macro_use]
mod fmt;

#[cfg(feature = "async")]
mod asynch;
mod blocking;
mod config;
mod error;
pub mod state;
#[cfg(feature = "std")]
mod tcp;

#[cfg(feature = "async")]
pub use asynch::AsyncClient;
pub use blocking::Client;
pub use config::{Config, ConfigBuilder, LastWill};
pub use error::{ConfigError, Error, ProtocolError};
pub use state::{Buffers, ConnectInfo, Event, MAX_FILTERS, Message, Session};
#[cfg(feature = "std")]
pub use tcp::TcpTransport;
pub use tern_mqtt::{ProtocolVersion, PublishProperties, QoS, ReasonCode};
