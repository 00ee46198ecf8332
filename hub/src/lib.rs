//! `tern-hub`: the gateway daemon.

pub mod router;
