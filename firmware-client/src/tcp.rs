//! `std` transport: a [`std::net::TcpStream`] behind the `embedded-io` traits.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use embedded_io::{ErrorType, Read, Write};

/// Blocking TCP transport for host tests and the simulator.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    /// Connects with `TCP_NODELAY` set and no read timeout.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self, std::io::Error> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self { stream })
    }

    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self { stream }
    }

    /// Sets the read timeout; a read that times out makes
    /// [`crate::Client::poll`] return `Ok(None)`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), std::io::Error> {
        self.stream.set_read_timeout(timeout)
    }

    /// The underlying stream (to shut it down, read its addresses, ...).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl ErrorType for TcpTransport {
    type Error = std::io::Error;
}

impl Read for TcpTransport {
    /// A read timeout (`WouldBlock` on Unix, `TimedOut` on Windows) is
    /// reported as `TimedOut`, which the drivers treat as "no data yet".
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        self.stream.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => std::io::ErrorKind::TimedOut.into(),
            _ => e,
        })
    }
}

impl Write for TcpTransport {
    fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> Result<(), std::io::Error> {
        self.stream.flush()
    }
}
