//! Accept loop of one listener: connection caps (per listener and per source address),
//! accept-error backoff, the TLS and WebSocket handshakes, one task per connection.
//!
//! The listener cap is a [`Semaphore`] with `max_connections` permits; a connection holds
//! its permit until its task ends. A connection accepted while no permit is free (or while
//! its source address already has `max_connections_per_ip` connections open) is closed at
//! once, counted and logged: MQTT has no way to answer before CONNECT, and reading a CONNECT
//! from a client we will refuse anyway only costs memory.
//!
//! TLS and WebSocket handshakes run in the connection's task and are bounded by
//! `session.connect_timeout`, like the CONNECT that follows them, so a client that opens a
//! socket and stalls anywhere before CONNACK is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{Instrument as _, debug, field, info_span, warn};

use crate::broker::Broker;
use crate::security::ListenerSecurity;
use crate::security::config::ListenerProtocol;
use crate::session::transport::WsStream;
use crate::session::{self, ConnectionContext};

/// First pause after a failed `accept` (e.g. out of file descriptors); doubles up to
/// [`MAX_ACCEPT_BACKOFF`] and resets after a successful accept.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between failed `accept` calls.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(2);
/// WebSocket subprotocol of MQTT (MQTT 5.0 §6).
const MQTT_SUBPROTOCOL: &str = "mqtt";
/// Room for WebSocket messages beyond `max_packet_size`: a message may carry the end of
/// one packet and the start of the next.
const WS_MESSAGE_SLACK: usize = 64 * 1024;

/// Accepts connections until shutdown, spawning one session task per connection on the
/// broker's task tracker.
pub async fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    broker: Arc<Broker>,
    security: Arc<ListenerSecurity>,
) {
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
        let ip_slot = match &security.per_ip {
            Some(per_ip) => match per_ip.acquire(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    broker.metrics().connections_refused.inc();
                    let refused = &broker.metrics().security.per_ip_refused;
                    refused.inc();
                    let total = refused.get();
                    if total <= 10 || total.is_power_of_two() {
                        warn!(
                            %peer,
                            refused_total = total,
                            "connection refused: source address at max_connections_per_ip"
                        );
                    }
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        broker.metrics().connections_accepted.inc();
        if let Err(err) = stream.set_nodelay(true) {
            warn!(%peer, cause = %err, "cannot set TCP_NODELAY");
        }
        let span = info_span!(
            "session",
            %peer,
            client_id = field::Empty,
            username = field::Empty
        );
        let broker = Arc::clone(&broker);
        let security = Arc::clone(&security);
        broker.shutdown().tasks().clone().spawn(
            async move {
                connection(stream, peer, broker, security).await;
                drop(ip_slot);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Runs the listener's handshakes on one accepted socket, then its session.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    security: Arc<ListenerSecurity>,
) {
    let context = ConnectionContext {
        security: Arc::clone(&security),
        certificate_identity: None,
    };
    if security.protocol == ListenerProtocol::Mqtt {
        session::serve(stream, peer, broker, context).await;
        return;
    }
    let timeout = broker.config().session.connect_timeout.0;
    let handshakes = handshake(stream, peer, &broker, &security, context);
    let ready = tokio::select! {
        () = broker.shutdown().triggered() => return,
        ready = tokio::time::timeout(timeout, handshakes) => ready,
    };
    match ready {
        Err(_) => {
            broker.metrics().security.connect_timeouts.inc();
            debug!(%peer, "handshake not completed within connect_timeout");
        }
        Ok(None) => {}
        Ok(Some(Ready::Tls(stream, context))) => {
            session::serve_stream(*stream, peer, broker, context).await;
        }
        Ok(Some(Ready::Ws(stream, context))) => {
            session::serve_stream(*stream, peer, broker, context).await;
        }
        Ok(Some(Ready::Wss(stream, context))) => {
            session::serve_stream(*stream, peer, broker, context).await;
        }
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A connection whose handshakes are done, ready for its session.
enum Ready {
    Tls(Box<TlsStream>, ConnectionContext),
    Ws(Box<WsStream<TcpStream>>, ConnectionContext),
    Wss(Box<WsStream<TlsStream>>, ConnectionContext),
}

/// TLS and/or WebSocket handshakes; `None` (counted and logged) when one fails.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Broker,
    security: &ListenerSecurity,
    mut context: ConnectionContext,
) -> Option<Ready> {
    let max_message = usize::try_from(broker.config().max_packet_size())
        .unwrap_or(usize::MAX)
        .saturating_add(WS_MESSAGE_SLACK);
    match security.protocol {
        ListenerProtocol::Mqtt => None,
        ListenerProtocol::Ws => {
            let ws = websocket(stream, peer, broker, security, max_message).await?;
            Some(Ready::Ws(Box::new(ws), context))
        }
        ListenerProtocol::MqttTls => {
            let tls = tls(stream, peer, broker, security, &mut context).await?;
            Some(Ready::Tls(Box::new(tls), context))
        }
        ListenerProtocol::Wss => {
            let tls = tls(stream, peer, broker, security, &mut context).await?;
            let ws = websocket(tls, peer, broker, security, max_message).await?;
            Some(Ready::Wss(Box::new(ws), context))
        }
    }
}

/// The TLS server handshake; records the client certificate's identity in `context`.
async fn tls(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Broker,
    security: &ListenerSecurity,
    context: &mut ConnectionContext,
) -> Option<TlsStream> {
    let config = Arc::clone(security.tls.as_ref()?);
    match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
        Ok(tls) => {
            if let Some(source) = security.identity {
                let (_, connection) = tls.get_ref();
                context.certificate_identity = connection
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| crate::security::tls::certificate_identity(leaf, source));
                if connection.peer_certificates().is_some()
                    && context.certificate_identity.is_none()
                {
                    warn!(%peer, ?source, "client certificate has no usable identity");
                }
            }
            Some(tls)
        }
        Err(err) => {
            let failed = &broker.metrics().security.tls_handshake_failed;
            failed.inc();
            let total = failed.get();
            if total <= 10 || total.is_power_of_two() {
                warn!(%peer, cause = %err, failed_total = total, "TLS handshake failed");
            } else {
                debug!(%peer, cause = %err, "TLS handshake failed");
            }
            None
        }
    }
}

/// The WebSocket upgrade: the configured path only, subprotocol `mqtt` echoed when asked.
#[allow(
    clippy::result_large_err,
    reason = "the callback's error type is tungstenite's HTTP response"
)]
async fn websocket<S>(
    stream: S,
    peer: SocketAddr,
    broker: &Broker,
    security: &ListenerSecurity,
    max_message: usize,
) -> Option<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = security.websocket_path.clone();
    let callback = move |request: &Request, mut response: Response| {
        if request.uri().path() != path {
            let mut refusal = ErrorResponse::new(Some("no MQTT endpoint here".to_owned()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(MQTT_SUBPROTOCOL));
        if offered {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(MQTT_SUBPROTOCOL),
            );
        }
        Ok(response)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await {
        Ok(ws) => Some(WsStream::new(ws)),
        Err(err) => {
            let failed = &broker.metrics().security.websocket_handshake_failed;
            failed.inc();
            let total = failed.get();
            if total <= 10 || total.is_power_of_two() {
                warn!(%peer, cause = %err, failed_total = total, "WebSocket handshake failed");
            }
            None
        }
    }
}
