//! `tern-client`: MQTT 5 client for microcontrollers (`no_std`, no allocation).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
