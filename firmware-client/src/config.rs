//! Connection settings: [`Config`], built and validated by [`ConfigBuilder`].

use tern_mqtt::{ProtocolVersion, QoS};

use crate::error::ConfigError;

/// Largest string or binary field MQTT can carry.
const MAX_FIELD: usize = u16::MAX as usize;

/// The last-will message the broker publishes when the connection drops
/// without a DISCONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWill<'a> {
    /// Topic name (validated, no wildcards).
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS of the will publish.
    pub qos: QoS,
    /// Whether the broker retains it.
    pub retain: bool,
}

/// Validated connection settings. Strings borrow from the application (often
/// `'static` in firmware). Build with [`ConfigBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config<'a> {
    pub(crate) version: ProtocolVersion,
    pub(crate) client_id: &'a str,
    pub(crate) keep_alive_secs: u16,
    pub(crate) clean_start: bool,
    pub(crate) session_expiry_secs: u32,
    pub(crate) will: Option<LastWill<'a>>,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a [u8]>,
    pub(crate) receive_maximum: u16,
}

impl<'a> Config<'a> {
    /// The protocol version this configuration connects with.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The client identifier.
    pub fn client_id(&self) -> &'a str {
        self.client_id
    }

    /// Keep-alive interval in seconds; 0 disables PINGREQ.
    pub fn keep_alive_secs(&self) -> u16 {
        self.keep_alive_secs
    }
}

/// Builder for [`Config`]. Setters that can reject their argument return
/// `Result<Self, ConfigError>`.
///
/// Defaults: MQTT 5.0, keep alive 60 s, clean start, session expiry 0, no will,
/// no credentials, receive maximum 16.
#[derive(Debug, Clone, Copy)]
pub struct ConfigBuilder<'a> {
    config: Config<'a>,
}

fn check_str(s: &str) -> Result<(), ConfigError> {
    if s.len() > MAX_FIELD || s.contains('\0') {
        return Err(ConfigError::InvalidString);
    }
    Ok(())
}

impl<'a> ConfigBuilder<'a> {
    /// Starts a configuration for `client_id`. An empty id asks an MQTT 5.0
    /// broker to assign one (only with clean start).
    pub fn new(client_id: &'a str) -> Result<Self, ConfigError> {
        check_str(client_id)?;
        Ok(Self {
            config: Config {
                version: ProtocolVersion::V5,
                client_id,
                keep_alive_secs: 60,
                clean_start: true,
                session_expiry_secs: 0,
                will: None,
                username: None,
                password: None,
                receive_maximum: 16,
            },
        })
    }

    /// Protocol version (5.0 by default; 3.1.1 for older brokers).
    #[must_use]
    pub fn protocol(mut self, version: ProtocolVersion) -> Self {
        self.config.version = version;
        self
    }

    /// Keep-alive interval in seconds (0 disables it).
    #[must_use]
    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.config.keep_alive_secs = secs;
        self
    }

    /// Clean start (5.0) / clean session (3.1.1). With `false` the broker keeps
    /// the session, and unacknowledged QoS 1 publishes are resent after a
    /// reconnect that finds it.
    #[must_use]
    pub fn clean_start(mut self, clean: bool) -> Self {
        self.config.clean_start = clean;
        self
    }

    /// Session Expiry Interval in seconds (5.0 only): how long the broker keeps
    /// the session after the connection drops. `u32::MAX` never expires.
    #[must_use]
    pub fn session_expiry(mut self, secs: u32) -> Self {
        self.config.session_expiry_secs = secs;
        self
    }

    /// Last-will message.
    pub fn will(
        mut self,
        topic: &'a str,
        payload: &'a [u8],
        qos: QoS,
        retain: bool,
    ) -> Result<Self, ConfigError> {
        tern_mqtt::topic::validate_topic_name(topic).map_err(ConfigError::WillTopic)?;
        if payload.len() > MAX_FIELD {
            return Err(ConfigError::TooLong);
        }
        self.config.will = Some(LastWill {
            topic,
            payload,
            qos,
            retain,
        });
        Ok(self)
    }

    /// User name and optional password.
    pub fn credentials(
        mut self,
        username: &'a str,
        password: Option<&'a [u8]>,
    ) -> Result<Self, ConfigError> {
        check_str(username)?;
        if password.is_some_and(|p| p.len() > MAX_FIELD) {
            return Err(ConfigError::TooLong);
        }
        self.config.username = Some(username);
        self.config.password = password;
        Ok(self)
    }

    /// Receive Maximum (5.0): how many QoS 1/2 publishes the broker may have in
    /// flight towards this client. Non-zero.
    pub fn receive_maximum(mut self, max: u16) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::ZeroReceiveMaximum);
        }
        self.config.receive_maximum = max;
        Ok(self)
    }

    /// The finished configuration.
    pub fn build(self) -> Config<'a> {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_validate() {
        assert_eq!(
            ConfigBuilder::new("a\0b").unwrap_err(),
            ConfigError::InvalidString
        );
        let b = ConfigBuilder::new("dev-1").unwrap();
        assert!(matches!(
            b.will("a/+", b"x", QoS::AtMostOnce, false),
            Err(ConfigError::WillTopic(_))
        ));
        assert_eq!(
            b.receive_maximum(0).unwrap_err(),
            ConfigError::ZeroReceiveMaximum
        );
        let c = b
            .keep_alive(5)
            .clean_start(false)
            .session_expiry(60)
            .protocol(ProtocolVersion::V311)
            .credentials("u", Some(b"p"))
            .unwrap()
            .build();
        assert_eq!(c.keep_alive_secs(), 5);
        assert_eq!(c.version(), ProtocolVersion::V311);
        assert!(!c.clean_start);
    }
}
