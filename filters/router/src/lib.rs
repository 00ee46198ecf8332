//! Topic router filter component (placeholder, being written).
