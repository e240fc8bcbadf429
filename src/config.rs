//! Configuration: defaults → TOML file → environment ([`Settings`]), then validated into a
//! [`Config`], the only form the rest of rowcast accepts.
//!
//! Each section is defined by the module it configures (`capture`, `hub`, `webhook`, …);
//! this module assembles them, reads the file and the environment, and checks the whole.
//! Every scalar key can be set from the environment as `ROWCAST_<SECTION>_<KEY>` (for example
//! `ROWCAST_WEBHOOK_RETRY_SCHEDULE`) or `ROWCAST_<KEY>` for top-level keys (`ROWCAST_LISTEN`).
//! `DATABASE_URL` is accepted as well as `ROWCAST_DATABASE_URL`. The table mapping and the
//! room allow-lists live only in the file; without them the demo helpdesk mapping is used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::api::HttpConfig;
pub use crate::api::auth::JwtConfig;
pub use crate::capture::{CaptureConfig, CaptureMode};
pub use crate::catalog::{RoomConfig, TableConfig, TableKind, default_rooms, default_tables};
pub use crate::hub::HubConfig;
pub use crate::retention::RetentionConfig;
pub use crate::telemetry::{LogConfig, LogFormat};
pub use crate::webhook::WebhookConfig;

/// Sections whose keys may be set as `ROWCAST_<SECTION>_<KEY>`.
const SECTIONS: &[&str] = &[
    "jwt",
    "log",
    "capture",
    "hub",
    "retention",
    "webhook",
    "http",
];

/// The configuration as written: every section with its defaults. Not checked; turn it
/// into a [`Config`] with [`Settings::validate`].
///
/// `Debug` is written by hand: the database URL's password is redacted, so printing a
/// configuration never leaks it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// PostgreSQL connection string of the application database.
    pub database_url: Option<String>,
    /// CA certificate(s) (PEM) the database server's certificate must chain to; without
    /// it TLS (per the URL's `sslmode`) encrypts but does not verify, like libpq.
    pub database_ca_file: Option<PathBuf>,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Connections in rowcast's pool (enrichment, API, webhooks), besides capture's own.
    pub pool_size: usize,
    /// Deadline for a graceful shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub jwt: JwtConfig,
    pub log: LogConfig,
    pub capture: CaptureConfig,
    pub hub: HubConfig,
    pub retention: RetentionConfig,
    pub webhook: WebhookConfig,
    pub http: HttpConfig,
    /// Tables to capture. Empty means the default helpdesk mapping.
    pub tables: Vec<TableConfig>,
    /// Room allow-lists: room name (or `prefix:*` pattern) → roles allowed to join.
    /// Empty means the default helpdesk allow-lists.
    pub rooms: BTreeMap<String, RoomConfig>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.database_url.as_deref().map(redact_url);
        f.debug_struct("Settings")
            .field("database_url", &url)
            .field("database_ca_file", &self.database_ca_file)
            .field("listen", &self.listen)
            .field("pool_size", &self.pool_size)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("jwt", &self.jwt)
            .field("log", &self.log)
            .field("capture", &self.capture)
            .field("hub", &self.hub)
            .field("retention", &self.retention)
            .field("webhook", &self.webhook)
            .field("http", &self.http)
            .field("tables", &self.tables)
            .field("rooms", &self.rooms)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` (key=value strings:
/// `password=***`).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        let hidden = if userinfo.contains(':') { ":***" } else { "" };
        return format!("{scheme}://{user}{hidden}@{host}");
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: None,
            database_ca_file: None,
            listen: "0.0.0.0:8080".parse().expect("valid default address"),
            pool_size: 16,
            shutdown_timeout: Duration::from_secs(10),
            jwt: JwtConfig::default(),
            log: LogConfig::default(),
            capture: CaptureConfig::default(),
            hub: HubConfig::default(),
            retention: RetentionConfig::default(),
            webhook: WebhookConfig::default(),
            http: HttpConfig::default(),
            tables: Vec::new(),
            rooms: BTreeMap::new(),
        }
    }
}

/// A configuration that passed [`Settings::validate`]: the helpdesk mapping filled in
/// where the file named no tables, and every section consistent. Read it through `Deref`.
#[derive(Debug, Clone)]
pub struct Config(Settings);

impl std::ops::Deref for Config {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.0
    }
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Settings::read(file)?.validate()
    }

    /// The settings back, to change and validate again (`rowcast demo` fills in its own
    /// database).
    pub fn into_settings(self) -> Settings {
        self.0
    }

    /// The database URL, or an error a person can act on.
    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or_else(|| {
            ConfigError::Invalid(vec![
                "no database configured: set DATABASE_URL (or database_url in rowcast.toml), or run `rowcast demo`"
                    .into(),
            ])
        })
    }
}

impl Settings {
    /// Defaults, then the TOML file (if given or if `rowcast.toml` exists), then the
    /// environment. Unknown keys and values of the wrong type are errors here; the whole
    /// is checked by [`Settings::validate`].
    // `map(env_key_to_path)` does not compile (the fn is not general enough over lifetimes),
    // so the closure clippy calls redundant stays.
    #[allow(clippy::redundant_closure)]
    pub fn read(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(vec![format!(
                        "config file {} does not exist",
                        path.display()
                    )]));
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None if Path::new("rowcast.toml").exists() => {
                fig = fig.merge(Toml::file_exact("rowcast.toml"));
            }
            None => {}
        }
        fig = fig
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            )
            // ROWCAST_CONFIG names the file (read by the CLI): it is not a key. Kubernetes
            // service links of a Service named `rowcast...` are not keys either.
            .merge(
                Env::prefixed("ROWCAST_")
                    .ignore(&["config"])
                    .filter(|k| !is_service_link(k.as_str()))
                    .map(|k| env_key_to_path(k)),
            );
        fig.extract()
            .map_err(|e| ConfigError::Invalid(e.into_iter().map(|e| e.to_string()).collect()))
    }

    /// Fills the helpdesk mapping and allow-lists where the file gave none.
    pub fn apply_defaults(&mut self) {
        if self.tables.is_empty() {
            self.tables = default_tables();
        }
        if self.rooms.is_empty() {
            self.rooms = default_rooms();
        }
    }

    /// Fills the defaults and checks the configuration as a whole; every problem is
    /// listed, not only the first.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        self.apply_defaults();
        let problems = self.problems();
        if problems.is_empty() {
            Ok(Config(self))
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(self.jwt.problems());
        if let Some(path) = &self.database_ca_file
            && !path.exists()
        {
            problems.push(format!(
                "database_ca_file {} does not exist",
                path.display()
            ));
        }
        if self.pool_size < 2 {
            problems.push("pool_size must be at least 2".into());
        }
        problems.extend(self.http.problems(self.hub.ping_interval));
        problems.extend(self.capture.problems());
        problems.extend(self.hub.problems());
        problems.extend(self.webhook.problems());
        problems.extend(self.retention.problems());
        problems.extend(crate::catalog::validate(&self.tables, &self.rooms));
        problems
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// `ROWCAST_WEBHOOK_RETRY_SCHEDULE` → `webhook.retry_schedule`; `ROWCAST_LISTEN` → `listen`.
fn env_key_to_path(key: &figment::value::UncasedStr) -> figment::value::Uncased<'static> {
    let lower = key.as_str().to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(rest) = lower
            .strip_prefix(section)
            .and_then(|r| r.strip_prefix('_'))
        {
            return format!("{section}.{rest}").into();
        }
    }
    lower.into()
}

/// Variables Kubernetes sets for every Service in the namespace (`enableServiceLinks`): a
/// Service `rowcast` gives `ROWCAST_SERVICE_HOST`, `ROWCAST_SERVICE_PORT_HTTP`, `ROWCAST_PORT`,
/// `ROWCAST_PORT_80_TCP_ADDR`, ...; a Service `rowcast-webhook` gives
/// `ROWCAST_WEBHOOK_SERVICE_HOST`. `key` is the part after `ROWCAST_`. No configuration key
/// ends in `port` or contains `service_host`/`service_port`, so nothing real is dropped.
fn is_service_link(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let parts: Vec<&str> = key.split('_').collect();
    let is_proto = |p: &str| matches!(p, "tcp" | "udp" | "sctp");
    let service = parts
        .windows(2)
        .any(|w| w[0] == "service" && (w[1] == "host" || w[1] == "port"));
    let port = match parts.as_slice() {
        [.., "port"] => true,
        [.., "port", n, proto] => n.parse::<u16>().is_ok() && is_proto(proto),
        [.., "port", n, proto, field] => {
            n.parse::<u16>().is_ok()
                && is_proto(proto)
                && matches!(*field, "proto" | "port" | "addr")
        }
        _ => false,
    };
    service || port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys_map_to_sections() {
        let k = |s: &str| env_key_to_path(figment::value::UncasedStr::new(s)).to_string();
        assert_eq!(k("WEBHOOK_RETRY_SCHEDULE"), "webhook.retry_schedule");
        assert_eq!(k("JWT_PUBLIC_KEY_FILE"), "jwt.public_key_file");
        assert_eq!(k("LISTEN"), "listen");
        assert_eq!(k("DATABASE_URL"), "database_url");
    }

    #[test]
    fn kubernetes_service_links_are_not_keys() {
        for link in [
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_HTTP",
            "PORT",
            "PORT_80_TCP",
            "PORT_80_TCP_PROTO",
            "PORT_80_TCP_PORT",
            "PORT_80_TCP_ADDR",
            "WEBHOOK_SERVICE_HOST",
            "WEBHOOK_PORT_443_TCP_ADDR",
        ] {
            assert!(is_service_link(link), "{link}");
        }
        for key in [
            "LISTEN",
            "DATABASE_URL",
            "LOG_FORMAT",
            "WEBHOOK_TIMEOUT",
            "CAPTURE_MAX_LAG",
            "HUB_SESSION_QUEUE",
            "SHUTDOWN_TIMEOUT",
        ] {
            assert!(!is_service_link(key), "{key}");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut c = Settings {
            database_url: Some("postgres://app:s3cr3t-pw@db:5432/helpdesk".into()),
            ..Settings::default()
        };
        c.jwt.secret = Some("jwt-secret-0123456789".into());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t-pw") && !shown.contains("jwt-secret-0123456789"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://app:***@db:5432/helpdesk"),
            "{shown}"
        );
        assert_eq!(
            redact_url("host=db user=app password=x dbname=h"),
            "host=db user=app password=*** dbname=h"
        );
    }

    #[test]
    fn defaults_validate() {
        let c = Settings::default().validate().unwrap();
        assert_eq!(c.tables.len(), default_tables().len());
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = Settings::default();
        c.apply_defaults();
        c.jwt.secret = Some("short".into());
        c.tables[0].entity = "comment".into();
        c.rooms
            .insert("user:1".into(), RoomConfig { roles: vec![] });
        let ConfigError::Invalid(p) = c.validate().unwrap_err();
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn http_limits_are_checked() {
        let mut c = Settings::default();
        c.http.header_read_timeout = Duration::ZERO;
        c.http.max_connections = 0;
        c.http.idle_timeout = c.hub.ping_interval;
        c.http.max_pending_socketio = 0;
        c.http.socketio_connect_timeout = Duration::ZERO;
        let ConfigError::Invalid(p) = c.validate().unwrap_err();
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p[0].contains("http.idle_timeout"), "{p:#?}");
        assert!(p[1].contains("http.header_read_timeout"), "{p:#?}");
        assert!(p[2].contains("http.max_connections"), "{p:#?}");
    }
}
