//! Guest SDK for Tern filters (placeholder, being written).
