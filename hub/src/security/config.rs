//! Configuration of a listener's transport and access control: the keys of `[[listener]]`
//! beyond `bind` and `max_connections` (see `docs/security.md`).
//!
//! ```toml
//! [[listener]]
//! bind = "0.0.0.0:8883"
//! protocol = "mqtt+tls"            # "mqtt" | "mqtt+tls" | "ws" | "wss"
//! tls = { cert = "server.pem", key = "server.key", client_ca = "ca.pem",
//!         require_client_cert = true, use_identity_as_username = true, identity = "cn" }
//! password_file = "/etc/tern/passwd"
//! acl_file = "/etc/tern/acl"
//! # allow_anonymous = false        # default: see `ListenerConfig::anonymous_policy`
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// What a listener speaks on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    #[default]
    #[serde(rename = "mqtt")]
    Mqtt,
    /// MQTT over TLS (needs `tls`).
    #[serde(rename = "mqtt+tls")]
    MqttTls,
    /// MQTT over WebSocket (subprotocol `mqtt`, binary frames).
    #[serde(rename = "ws")]
    Ws,
    /// MQTT over WebSocket over TLS (needs `tls`).
    #[serde(rename = "wss")]
    Wss,
}

impl ListenerProtocol {
    /// Whether the socket carries TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::MqttTls | Self::Wss)
    }

    /// Whether MQTT rides in WebSocket frames.
    pub fn uses_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    /// The name used in the configuration and in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::MqttTls => "mqtt+tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

/// Which part of a client certificate names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// The subject's Common Name.
    #[default]
    Cn,
    /// The first Subject Alternative Name (DNS name, e-mail or URI).
    San,
}

/// `tls = { ... }` of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key of the server certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates are verified against. Without it no
    /// client certificate is asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake of a client without a valid certificate (needs `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Take the username from the client certificate (see `identity`); the CONNECT username
    /// and password are then ignored for clients that present one.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// Which certificate field is the identity: `"cn"` (default) or `"san"`.
    #[serde(default)]
    pub identity: IdentitySource,
}

/// `websocket = { ... }` of a `ws`/`wss` listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// HTTP path of the upgrade request; other paths get 404.
    pub path: String,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            path: "/mqtt".to_owned(),
        }
    }
}

/// Whether clients without credentials are let in, as resolved from a listener's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnonymousPolicy {
    /// Clients without a username (or certificate identity) connect.
    Allowed,
    /// They get CONNACK 0x87 (v5) / 0x05 (3.1.1).
    Refused,
}

/// The security keys of one `[[listener]]`, checked together.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSecurityKeys<'a> {
    /// `bind`.
    pub bind: SocketAddr,
    /// `protocol`.
    pub protocol: ListenerProtocol,
    /// `tls`.
    pub tls: Option<&'a ListenerTls>,
    /// `websocket`.
    pub websocket: &'a WebSocketSettings,
    /// `allow_anonymous` (unset: decided by [`ListenerSecurityKeys::anonymous_policy`]).
    pub allow_anonymous: Option<bool>,
    /// `password_file`.
    pub password_file: Option<&'a PathBuf>,
}

impl ListenerSecurityKeys<'_> {
    /// Whether the listener authenticates anyone: a password file, or client certificates
    /// used as usernames.
    pub fn has_authentication(&self) -> bool {
        self.password_file.is_some()
            || self
                .tls
                .is_some_and(|t| t.use_identity_as_username && t.client_ca.is_some())
    }

    /// Anonymous access: `allow_anonymous` when set; otherwise allowed only on a loopback
    /// listener without authentication (the out-of-the-box local hub). A listener on any
    /// other address without authentication must say `allow_anonymous = true`.
    pub fn anonymous_policy(&self) -> Result<AnonymousPolicy, String> {
        match self.allow_anonymous {
            Some(true) => Ok(AnonymousPolicy::Allowed),
            Some(false) if !self.has_authentication() => Err(
                "allow_anonymous = false without password_file or a client certificate \
                 identity (tls.use_identity_as_username): nobody could connect"
                    .into(),
            ),
            Some(false) => Ok(AnonymousPolicy::Refused),
            None if self.has_authentication() => Ok(AnonymousPolicy::Refused),
            None if self.bind.ip().is_loopback() => Ok(AnonymousPolicy::Allowed),
            None => Err(format!(
                "listener on {} (not loopback) has no authentication: set password_file, \
                 or allow_anonymous = true to accept anyone",
                self.bind
            )),
        }
    }

    /// Cross-key checks; `(key, reason)` on failure.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (self.protocol.uses_tls(), self.tls) {
            (true, None) => {
                return Err((
                    "listener.tls",
                    format!(
                        "protocol {:?} needs tls = {{ cert, key }}",
                        self.protocol.as_str()
                    ),
                ));
            }
            (false, Some(_)) => {
                return Err((
                    "listener.tls",
                    format!(
                        "protocol {:?} does not use TLS (use \"mqtt+tls\" or \"wss\")",
                        self.protocol.as_str()
                    ),
                ));
            }
            _ => {}
        }
        if let Some(tls) = self.tls
            && tls.client_ca.is_none()
        {
            if tls.require_client_cert {
                return Err((
                    "listener.tls.require_client_cert",
                    "needs tls.client_ca to verify client certificates".into(),
                ));
            }
            if tls.use_identity_as_username {
                return Err((
                    "listener.tls.use_identity_as_username",
                    "needs tls.client_ca to verify client certificates".into(),
                ));
            }
        }
        if self.protocol.uses_websocket() && !self.websocket.path.starts_with('/') {
            return Err((
                "listener.websocket.path",
                format!("must start with '/', got {:?}", self.websocket.path),
            ));
        }
        self.anonymous_policy()
            .map(|_| ())
            .map_err(|reason| ("listener.allow_anonymous", reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(
        bind: &str,
        tls: Option<&'a ListenerTls>,
        ws: &'a WebSocketSettings,
        allow_anonymous: Option<bool>,
        password_file: Option<&'a PathBuf>,
    ) -> ListenerSecurityKeys<'a> {
        ListenerSecurityKeys {
            bind: bind.parse().expect("address"),
            protocol: if tls.is_some() {
                ListenerProtocol::MqttTls
            } else {
                ListenerProtocol::Mqtt
            },
            tls,
            websocket: ws,
            allow_anonymous,
            password_file,
        }
    }

    #[test]
    fn anonymous_access_defaults_to_loopback_only() {
        let ws = WebSocketSettings::default();
        let passwd = PathBuf::from("passwd");
        let policy = |bind, anon, file| keys(bind, None, &ws, anon, file).anonymous_policy();
        assert_eq!(
            policy("127.0.0.1:1883", None, None),
            Ok(AnonymousPolicy::Allowed)
        );
        assert_eq!(
            policy("[::1]:1883", None, None),
            Ok(AnonymousPolicy::Allowed)
        );
        assert!(policy("0.0.0.0:1883", None, None).is_err());
        assert_eq!(
            policy("0.0.0.0:1883", Some(true), None),
            Ok(AnonymousPolicy::Allowed)
        );
        assert_eq!(
            policy("0.0.0.0:1883", None, Some(&passwd)),
            Ok(AnonymousPolicy::Refused)
        );
        assert_eq!(
            policy("127.0.0.1:1883", None, Some(&passwd)),
            Ok(AnonymousPolicy::Refused)
        );
        assert!(policy("127.0.0.1:1883", Some(false), None).is_err());
    }

    #[test]
    fn tls_keys_are_checked_together() {
        let ws = WebSocketSettings::default();
        let mut tls = ListenerTls {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: None,
            require_client_cert: true,
            use_identity_as_username: false,
            identity: IdentitySource::Cn,
        };
        let err = keys("127.0.0.1:8883", Some(&tls), &ws, None, None)
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "listener.tls.require_client_cert");
        tls.client_ca = Some("ca.pem".into());
        tls.use_identity_as_username = true;
        let ok = keys("0.0.0.0:8883", Some(&tls), &ws, None, None);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.anonymous_policy(), Ok(AnonymousPolicy::Refused));
        let mut no_tls = keys("127.0.0.1:8883", None, &ws, None, None);
        no_tls.protocol = ListenerProtocol::Wss;
        assert_eq!(no_tls.validate().unwrap_err().0, "listener.tls");
        let bad_path = WebSocketSettings {
            path: "mqtt".into(),
        };
        let mut ws_keys = keys("127.0.0.1:8080", None, &bad_path, None, None);
        ws_keys.protocol = ListenerProtocol::Ws;
        assert_eq!(ws_keys.validate().unwrap_err().0, "listener.websocket.path");
    }
}
