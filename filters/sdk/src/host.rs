//! The host imports, [`log`](crate::log) and [`now_ms`]: calls into the hub on wasm32, and
//! stderr and the std clock on other targets so filters unit-test natively.

pub mod log {
    //! Writes lines to the hub's log, tagged with the filter's name. The hub rate-limits
    //! them. (Natively: stderr.)

    use super::imp::{Level, write};

    pub fn error(message: &str) {
        write(Level::Error, message);
    }

    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }

    pub fn info(message: &str) {
        write(Level::Info, message);
    }

    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }

    pub fn trace(message: &str) {
        write(Level::Trace, message);
    }
}

/// Milliseconds on a monotonic clock; only differences are meaningful.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::__private::bindings::tern::filter::host;
    pub(super) use crate::__private::bindings::tern::filter::host::Level;

    pub(super) fn write(level: Level, message: &str) {
        host::log(level, message);
    }

    pub(super) fn now_ms() -> u64 {
        host::now_ms()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    //! Native stand-ins: stderr and a process-wide monotonic clock.

    use std::sync::OnceLock;
    use std::time::Instant;

    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Level {
        Error,
        Warn,
        Info,
        Debug,
        Trace,
    }

    pub(super) fn write(level: Level, message: &str) {
        eprintln!("[filter {level:?}] {message}");
    }

    pub(super) fn now_ms() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let elapsed = START.get_or_init(Instant::now).elapsed().as_millis();
        u64::try_from(elapsed).unwrap_or(u64::MAX)
    }
}
