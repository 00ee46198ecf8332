//! SQL92 selector filter component (placeholder, being written).
