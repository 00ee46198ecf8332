//! Keeps every message: the boundary-cost baseline (placeholder, being written).
