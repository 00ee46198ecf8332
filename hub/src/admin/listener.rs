//! The admin server's accept side: at most [`MAX_CONNECTIONS`] connections at once, each
//! closed after [`MAX_CONNECTION_LIFETIME`], so idle or trickling clients (slowloris) can
//! neither pile up nor hold a slot for ever. Accept errors are logged at a decreasing rate
//! and retried after a pause.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Admin connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest life of one admin connection, idle or not (a scrape reconnects after it).
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A [`TcpListener`] with a connection cap and a lifetime per connection.
#[derive(Debug)]
pub struct GuardedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    accept_errors: u64,
}

impl GuardedListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            accept_errors: 0,
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            // The semaphore is never closed; a closed one would only stop accepting.
            let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let stream = GuardedStream {
                        stream,
                        deadline: Box::pin(tokio::time::sleep(MAX_CONNECTION_LIFETIME)),
                        _slot: permit,
                    };
                    return (stream, addr);
                }
                Err(err) => {
                    self.accept_errors += 1;
                    if self.accept_errors.is_power_of_two() {
                        warn!(cause = %err, errors = self.accept_errors, "admin API accept failed");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One admin connection: holds its slot, fails reads and writes once its lifetime is up
/// (which makes the server drop it).
#[derive(Debug)]
pub struct GuardedStream {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl GuardedStream {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn lifetime_over() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "admin connection lifetime exceeded",
    )
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_cut_after_its_lifetime() {
        let bound = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = bound.local_addr().expect("address");
        let mut listener = GuardedListener::new(bound);
        // Kept open and silent: the served side must end by its lifetime, not by EOF.
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let (mut served, _) = listener.accept().await;
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let err = served
            .read(&mut buf)
            .await
            .expect_err("the read ends with the lifetime");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= MAX_CONNECTION_LIFETIME);
        // Before the lifetime, bytes flow both ways.
        let (client, (mut fresh, _)) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = client.expect("connect again");
        client.write_all(b"ping").await.expect("write");
        let n = fresh.read(&mut buf).await.expect("read");
        assert_eq!(buf.get(..n), Some(&b"ping"[..]));
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_slot() {
        let bound = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = bound.local_addr().expect("address");
        let mut listener = GuardedListener::new(bound);
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            served.push(listener.accept().await);
        }
        clients.push(TcpStream::connect(addr).await.expect("connect"));
        let waiting = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(waiting.is_err(), "a connection over the cap was served");
        served.pop();
        let admitted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(admitted.is_ok(), "a freed slot was not reused");
    }
}
