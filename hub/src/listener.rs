//! Accept loop of one TCP listener: connection cap, accept-error backoff, one task per
//! connection.
//!
//! The cap is a [`Semaphore`] with `max_connections` permits; a connection holds its permit
//! until its task ends. A connection accepted while no permit is free is closed at once,
//! counted in `connections_refused` and logged: MQTT has no way to answer before CONNECT,
//! and reading a CONNECT from a client we will refuse anyway only costs memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument as _, field, info_span, warn};

use crate::broker::Broker;
use crate::session;

/// First pause after a failed `accept` (e.g. out of file descriptors); doubles up to
/// [`MAX_ACCEPT_BACKOFF`] and resets after a successful accept.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between failed `accept` calls.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(2);

/// Accepts connections until shutdown, spawning one session task per connection on the
/// broker's task tracker.
pub async fn accept_loop(listener: TcpListener, max_connections: usize, broker: Arc<Broker>) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let local = listener.local_addr().ok();
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            () = broker.shutdown().triggered() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                pair
            }
            Err(err) => {
                warn!(?local, cause = %err, ?backoff, "accept failed; backing off");
                tokio::select! {
                    () = broker.shutdown().triggered() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            broker.metrics().connections_refused.inc();
            warn!(%peer, max_connections, "connection refused: listener at max_connections");
            drop(stream);
            continue;
        };
        broker.metrics().connections_accepted.inc();
        if let Err(err) = stream.set_nodelay(true) {
            warn!(%peer, cause = %err, "cannot set TCP_NODELAY");
        }
        let span = info_span!("session", %peer, client_id = field::Empty);
        let broker = Arc::clone(&broker);
        broker.shutdown().tasks().clone().spawn(
            async move {
                session::serve(stream, peer, Arc::clone(&broker)).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}
