//! Subscription routing and retained messages.
