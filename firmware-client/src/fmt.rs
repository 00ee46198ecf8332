//! Logging shim: the macros forward to `log` with the `log` feature and
//! expand to nothing without it, so call sites need no `cfg`. Arguments must
//! be values the caller uses anyway (they are not evaluated without `log`).

macro_rules! debug {
    ($($arg:tt)*) => {
        #[cfg(feature = "log")]
        ::log::debug!(target: "tern_client", $($arg)*);
    };
}

macro_rules! warn {
    ($($arg:tt)*) => {
        #[cfg(feature = "log")]
        ::log::warn!(target: "tern_client", $($arg)*);
    };
}
