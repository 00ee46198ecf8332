//! Async driver over `embedded_io_async::{Read, Write}`.

use embedded_io_async::{Read, Write};
use tern_mqtt::QoS;

use crate::blocking::{lift, record_read};
use crate::config::Config;
use crate::error::Error;
use crate::state::{Buffers, ConnectInfo, Event, Session};

/// Async MQTT client: a [`Session`] plus the read/write loop, for
/// `embassy-net` sockets and anything else implementing `embedded-io-async`.
///
/// `N` is the QoS 1 in-flight window (and the incoming QoS 2 table). Every
/// method takes the transport, so the application keeps ownership of it and
/// can replace it on reconnect while the session (and its unacknowledged
/// publishes) lives on.
///
/// [`AsyncClient::poll`] waits for the broker; run it under a timeout (for
/// example `embassy_time::with_deadline` at [`Session::next_deadline_ms`]) so
/// keep-alive pings go out on a quiet link. Cancelling `poll` while it waits
/// for data is safe: bytes are only recorded once a read completes. Cancelling
/// a write leaves a partial packet on the wire: reconnect after that.
#[derive(Debug)]
pub struct AsyncClient<'a, const N: usize> {
    session: Session<'a, N>,
}

/// Writes all of `bytes`, then flushes. A write of zero bytes means closed.
async fn send<T: Write>(io: &mut T, mut bytes: &[u8]) -> Result<(), Error<T::Error>> {
    while !bytes.is_empty() {
        match io.write(bytes).await {
            Ok(0) => return Err(Error::ConnectionClosed),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) => return Err(Error::Transport(e)),
        }
    }
    io.flush().await.map_err(Error::Transport)
}

/// One read into the session. `Ok(false)`: the transport timed out.
async fn fill<T: Read, const N: usize>(
    io: &mut T,
    session: &mut Session<'_, N>,
) -> Result<bool, Error<T::Error>> {
    let buf = session.rx_free().map_err(lift)?;
    let result = io.read(buf).await;
    record_read(session, result)
}

impl<'a, const N: usize> AsyncClient<'a, N> {
    /// A disconnected client.
    pub fn new(config: Config<'a>, buffers: Buffers<'a>) -> Self {
        Self {
            session: Session::new(config, buffers),
        }
    }

    /// The sans-IO session (state queries, deadlines).
    pub fn session(&self) -> &Session<'a, N> {
        &self.session
    }

    /// Sends CONNECT, waits for CONNACK, then resends every unacknowledged
    /// QoS 1 publish with DUP set. A read timeout while waiting is
    /// [`Error::Timeout`].
    pub async fn connect<T: Read + Write>(
        &mut self,
        io: &mut T,
        now_ms: u64,
    ) -> Result<ConnectInfo, Error<T::Error>> {
        let bytes = self.session.connect(now_ms).map_err(lift)?;
        send(io, bytes).await?;
        let info = loop {
            if !self.session.frame_ready().map_err(lift)? {
                if !fill(io, &mut self.session).await? {
                    self.session.connection_lost();
                    return Err(Error::Timeout);
                }
                continue;
            }
            if let Some(Event::Connected(info)) = self.session.handle(now_ms).map_err(lift)?.event {
                break info;
            }
        };
        let mut i = 0;
        while let Some(bytes) = self.session.resend(i) {
            send(io, bytes).await?;
            i += 1;
        }
        Ok(info)
    }

    /// Publishes `payload` to `topic` with optional user properties. Returns
    /// the packet identifier at QoS 1 (its PUBACK arrives as
    /// [`Event::Published`]), 0 at QoS 0. A QoS 1 publish whose write fails
    /// stays in flight and is resent by the next [`AsyncClient::connect`].
    pub async fn publish<T: Write>(
        &mut self,
        io: &mut T,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        user_properties: &[(&str, &str)],
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let (id, bytes) = self
            .session
            .publish(topic, payload, qos, user_properties, now_ms)
            .map_err(lift)?;
        send(io, bytes).await?;
        Ok(id)
    }

    /// Serializes `value` with postcard into `scratch` and publishes it.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors publish plus the value and its scratch buffer"
    )]
    pub async fn publish_postcard<T: Write, V: serde::Serialize + ?Sized>(
        &mut self,
        io: &mut T,
        topic: &str,
        value: &V,
        qos: QoS,
        user_properties: &[(&str, &str)],
        scratch: &mut [u8],
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let payload = postcard::to_slice(value, scratch).map_err(|_| Error::Serialize)?;
        self.publish(io, topic, payload, qos, user_properties, now_ms)
            .await
    }

    /// Subscribes to up to [`crate::MAX_FILTERS`] filters; the SUBACK arrives
    /// as [`Event::Subscribed`] with this packet identifier.
    pub async fn subscribe<T: Write>(
        &mut self,
        io: &mut T,
        filters: &[(&str, QoS)],
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let (id, bytes) = self.session.subscribe(filters, now_ms).map_err(lift)?;
        send(io, bytes).await?;
        Ok(id)
    }

    /// Unsubscribes; the UNSUBACK arrives as [`Event::Unsubscribed`].
    pub async fn unsubscribe<T: Write>(
        &mut self,
        io: &mut T,
        filters: &[&str],
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let (id, bytes) = self.session.unsubscribe(filters, now_ms).map_err(lift)?;
        send(io, bytes).await?;
        Ok(id)
    }

    /// Sends PINGREQ when due, reads once (unless a whole packet is already
    /// buffered) and handles one packet: acknowledges it and returns its event.
    /// `Ok(None)`: nothing to report yet.
    pub async fn poll<T: Read + Write>(
        &mut self,
        io: &mut T,
        now_ms: u64,
    ) -> Result<Option<Event<'_>>, Error<T::Error>> {
        if let Some(ping) = self.session.poll_keepalive(now_ms).map_err(lift)? {
            send(io, ping).await?;
        }
        if !self.session.frame_ready().map_err(lift)?
            && (!fill(io, &mut self.session).await? || !self.session.frame_ready().map_err(lift)?)
        {
            return Ok(None);
        }
        let step = self.session.handle(now_ms).map_err(lift)?;
        if !step.reply.is_empty() {
            send(io, step.reply).await?;
        }
        Ok(step.event)
    }

    /// Sends DISCONNECT (the broker discards the will). Unacknowledged QoS 1
    /// publishes are kept for the next connect.
    pub async fn disconnect<T: Write>(&mut self, io: &mut T) -> Result<(), Error<T::Error>> {
        let bytes = self.session.disconnect().map_err(lift)?;
        send(io, bytes).await
    }
}

/// Transactions (feature `tx`); see the crate docs' "Transactions".
#[cfg(feature = "tx")]
impl<const N: usize> AsyncClient<'_, N> {
    /// Publishes a half message of transaction `id` (QoS 1; the user property
    /// `tern-tx` is added). The hub stores it without delivering it; its PUBACK
    /// arrives as [`Event::Published`] (map the reason with
    /// [`crate::TxOutcome::from`]). Returns the packet identifier.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors publish plus the transaction id"
    )]
    pub async fn publish_in_tx<T: Write>(
        &mut self,
        io: &mut T,
        id: &crate::TxId,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        user_properties: &[(&str, &str)],
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let (packet_id, bytes) = self
            .session
            .publish_in_tx(id, topic, payload, qos, user_properties, now_ms)
            .map_err(lift)?;
        send(io, bytes).await?;
        Ok(packet_id)
    }

    /// Commits transaction `id` once every half message is acknowledged: the
    /// hub delivers them as one unit, in publish order. The answer arrives as
    /// [`Event::TxResolved`] with this packet identifier.
    pub async fn commit<T: Write>(
        &mut self,
        io: &mut T,
        id: &crate::TxId,
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        self.finish_tx(io, id, crate::TxAction::Commit, now_ms)
            .await
    }

    /// Rolls transaction `id` back: the hub discards its half messages. The
    /// answer arrives as [`Event::TxResolved`] with this packet identifier.
    pub async fn rollback<T: Write>(
        &mut self,
        io: &mut T,
        id: &crate::TxId,
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        self.finish_tx(io, id, crate::TxAction::Rollback, now_ms)
            .await
    }

    async fn finish_tx<T: Write>(
        &mut self,
        io: &mut T,
        id: &crate::TxId,
        action: crate::TxAction,
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let (packet_id, bytes) = self.session.finish_tx(id, action, now_ms).map_err(lift)?;
        send(io, bytes).await?;
        Ok(packet_id)
    }

    /// Subscribes (QoS 1) to this client's check topic,
    /// `$tern/tx/check/<client id>`, so the hub's questions about open
    /// transactions arrive as [`Event::TxCheck`]. The SUBACK arrives as
    /// [`Event::Subscribed`].
    pub async fn subscribe_tx_checks<T: Write>(
        &mut self,
        io: &mut T,
        now_ms: u64,
    ) -> Result<u16, Error<T::Error>> {
        let (packet_id, bytes) = self.session.subscribe_tx_checks(now_ms).map_err(lift)?;
        send(io, bytes).await?;
        Ok(packet_id)
    }
}
