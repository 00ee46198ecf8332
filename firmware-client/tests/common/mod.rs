//! The scripted transport of the client's tests: it replays encoded broker packets,
//! records what the client writes and injects faults (reads of at most `chunk`
//! bytes, a write failure after N writes, end of stream, read timeouts).

use std::collections::VecDeque;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use tern_client::ProtocolVersion;
use tern_mqtt::{DecodeOptions, Packet, decode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockError(pub ErrorKind);

impl core::fmt::Display for MockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mock transport error {:?}", self.0)
    }
}

impl core::error::Error for MockError {}

impl embedded_io::Error for MockError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// Scripted transport: reads replay `input`, writes go to `output`. Packets are
/// encoded and decoded in `version`. When `input` is empty a read reports a timeout,
/// or end of stream with `eof`.
#[derive(Debug)]
pub struct Mock {
    pub version: ProtocolVersion,
    pub input: VecDeque<u8>,
    /// Largest read; 0 means unlimited.
    pub chunk: usize,
    pub output: Vec<u8>,
    /// Writes that succeed before every further write fails.
    pub writes_left: Option<usize>,
    pub eof: bool,
}

impl Default for Mock {
    fn default() -> Self {
        Self {
            version: ProtocolVersion::V5,
            input: VecDeque::new(),
            chunk: 0,
            output: Vec::new(),
            writes_left: None,
            eof: false,
        }
    }
}

impl Mock {
    /// Queues `packet`, encoded, for the client to read.
    pub fn push(&mut self, packet: Packet<'_>) {
        let mut buf = vec![0u8; 4096];
        let n = packet
            .encode(self.version, &mut buf)
            .expect("encode test packet");
        self.input.extend(&buf[..n]);
    }

    /// Every complete packet the client wrote so far, drained.
    pub fn sent(&mut self) -> Vec<Vec<u8>> {
        let bytes = std::mem::take(&mut self.output);
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (_, used) = decode(rest, &DecodeOptions::new(self.version))
                .expect("client wrote a valid packet");
            out.push(rest[..used].to_vec());
            rest = &rest[used..];
        }
        out
    }
}

impl ErrorType for Mock {
    type Error = MockError;
}

impl Read for Mock {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        if self.input.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(MockError(ErrorKind::TimedOut))
            };
        }
        let mut n = buf.len().min(self.input.len());
        if self.chunk > 0 {
            n = n.min(self.chunk);
        }
        for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for Mock {
    fn write(&mut self, buf: &[u8]) -> Result<usize, MockError> {
        if let Some(left) = &mut self.writes_left {
            if *left == 0 {
                return Err(MockError(ErrorKind::BrokenPipe));
            }
            *left -= 1;
        }
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), MockError> {
        Ok(())
    }
}

/// The same script behind the async traits; it never returns `Pending`.
pub struct AsyncMock(pub Mock);

impl embedded_io_async::ErrorType for AsyncMock {
    type Error = MockError;
}

impl embedded_io_async::Read for AsyncMock {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        self.0.read(buf)
    }
}

impl embedded_io_async::Write for AsyncMock {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, MockError> {
        self.0.write(buf)
    }

    async fn flush(&mut self) -> Result<(), MockError> {
        Ok(())
    }
}

/// Runs a future that never waits (the async mock is always ready).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("mock future was pending"),
    }
}
