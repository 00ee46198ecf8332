//! Misbehaving filter for host tests (placeholder, being written).
