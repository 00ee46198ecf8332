//! Graceful shutdown: one cancellation token observed by every task, and a tracker that
//! lets [`crate::run`] wait until every connection has reached a safe point.
//!
//! Order on shutdown: listeners stop accepting, then each session sends MQTT 5 clients a
//! DISCONNECT 0x8B ("server shutting down"), flushes what it has written and closes; `run`
//! returns once the tracker is empty.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handle shared by all tasks of one hub instance.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A fresh, not yet triggered handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the shutdown starts.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// The tracker every connection and background task is spawned on.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Waits until every tracked task has finished. Call after [`Shutdown::trigger`].
    pub async fn wait_for_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
