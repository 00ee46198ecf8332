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
#[cfg(feature = "tx")]
mod tx;

#[cfg(feature = "async")]
pub use asynch::AsyncClient;
pub use blocking::Client;
pub use config::{Config, ConfigBuilder, LastWill};
pub use error::{ConfigError, Error, ProtocolError};
pub use state::{Buffers, ConnectInfo, Event, MAX_FILTERS, Message, Session};
#[cfg(feature = "std")]
pub use tcp::TcpTransport;
pub use tern_mqtt::{ProtocolVersion, PublishProperties, QoS, ReasonCode};
#[cfg(feature = "tx")]
pub use tx::{
    MAX_CHECK_CLIENT_ID, MAX_TX_ID, MAX_TX_PREFIX, MAX_TX_USER_PROPERTIES, TX_PROPERTY, TxAction,
    TxError, TxId, TxIdError, TxOutcome, TxResolution, TxSequence,
};
