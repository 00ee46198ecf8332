//! `tern-mqtt`: MQTT 3.1.1 and 5.0 packet codec shared by the hub and the firmware client.
#![no_std]
