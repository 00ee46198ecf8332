//! `tern-hub`: the gateway daemon.
