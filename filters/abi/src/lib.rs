//! The packed batch and verdict buffers shared by the hub and filter guests (placeholder, being written).
