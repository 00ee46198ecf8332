//! Device-fleet simulator for the Tern hub.
//!
//! Every simulated device is a [`tern_client::AsyncClient`] (the firmware
//! client) over a tokio socket wrapped in
//! [`embedded_io_adapters::tokio_1::FromTokio`], so load runs exercise the
//! device code. The simulator talks to any MQTT 5 broker over the network and
//! knows nothing of the hub's internals.

pub mod bench;
pub mod bridge_bench;
pub mod chaos;
pub mod consume;
pub mod payload;
pub mod process;
pub mod run;
pub mod stats;
pub mod tx;

pub use bench::{Scenario, bench, scenarios};
pub use run::{RunConfig, SessionMode, Summary, run};
pub use tern_client::QoS;
