//! `[admin]`: the admin HTTP API and Prometheus endpoint — where it listens, its bearer
//! token, and whether a scrape needs the token.
//!
//! The server runs when a token is configured (`token` or `token_file`), or when
//! `enabled = true` says so explicitly; `enabled = false` turns it off either way. Without
//! a token only `/health`, `/ready` and (with `metrics_auth = false`) `/metrics` answer:
//! the control endpoints refuse every request with 401, whatever the bind address, so a
//! hub without a token never exposes control on any address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default admin address: loopback only.
pub const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9883,
));

/// `[admin]`: the admin HTTP API (`docs/admin-api.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Run the admin server. Unset: only when a token is configured.
    pub enabled: Option<bool>,
    /// Address of the HTTP server (port 0 picks a free one; the bound address is logged).
    pub bind: SocketAddr,
    /// Bearer token required by every endpoint but `/health` and `/ready`.
    pub token: Option<String>,
    /// File holding the bearer token (first line, surrounding whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// Whether `GET /metrics` needs the token. Unset: yes when a token is configured.
    pub metrics_auth: Option<bool>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            bind: DEFAULT_ADMIN_BIND,
            token: None,
            token_file: None,
            metrics_auth: None,
        }
    }
}

impl AdminConfig {
    /// Whether a token is configured (inline or as a file).
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }

    /// Whether the admin server runs.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or_else(|| self.has_token())
    }

    /// Whether a scrape of `/metrics` needs the token.
    pub fn metrics_need_token(&self) -> bool {
        self.metrics_auth.unwrap_or_else(|| self.has_token())
    }

    /// The bearer token, read from `token_file` if that is how it is given. Errors name
    /// the file and the reason.
    pub fn resolve_token(&self) -> Result<Option<String>, (&'static str, String)> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(file) = &self.token_file else {
            return Ok(None);
        };
        read_token_file(file).map(Some)
    }
}

/// The first line of `file`, trimmed; an empty token is refused.
fn read_token_file(file: &Path) -> Result<String, (&'static str, String)> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| ("admin.token_file", format!("{}: {err}", file.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err((
            "admin.token_file",
            format!("{}: the file holds no token", file.display()),
        ));
    }
    Ok(token)
}

/// Checks of `[admin]` that need no I/O. Returns `(key, reason)`.
pub fn validate(admin: &AdminConfig) -> Result<(), (&'static str, String)> {
    if admin.token.is_some() && admin.token_file.is_some() {
        return Err((
            "admin.token",
            "give either admin.token or admin.token_file, not both".into(),
        ));
    }
    if let Some(token) = &admin.token {
        if token.trim().is_empty() {
            return Err(("admin.token", "must not be empty".into()));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err((
                "admin.token",
                "must not contain whitespace or control characters".into(),
            ));
        }
    }
    if admin.metrics_auth == Some(true) && !admin.has_token() {
        return Err((
            "admin.metrics_auth",
            "needs admin.token or admin.token_file".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_without_a_token_unless_asked() {
        let admin = AdminConfig::default();
        assert!(!admin.is_enabled());
        assert!(!admin.metrics_need_token());
        let with_token = AdminConfig {
            token: Some("secret".into()),
            ..AdminConfig::default()
        };
        assert!(with_token.is_enabled());
        assert!(with_token.metrics_need_token());
        let explicit = AdminConfig {
            enabled: Some(true),
            ..AdminConfig::default()
        };
        assert!(explicit.is_enabled());
    }

    #[test]
    fn refuses_contradictions() {
        let both = AdminConfig {
            token: Some("a".into()),
            token_file: Some("t".into()),
            ..AdminConfig::default()
        };
        assert_eq!(validate(&both).map_err(|e| e.0), Err("admin.token"));
        let metrics = AdminConfig {
            metrics_auth: Some(true),
            ..AdminConfig::default()
        };
        assert_eq!(
            validate(&metrics).map_err(|e| e.0),
            Err("admin.metrics_auth")
        );
        let blank = AdminConfig {
            token: Some(" ".into()),
            ..AdminConfig::default()
        };
        assert_eq!(validate(&blank).map_err(|e| e.0), Err("admin.token"));
    }
}
