//! Configuration: defaults → TOML file → environment, then `validate()` into a checked [`Config`].
//!
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
use serde::{Deserialize, Deserializer, Serialize};

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

/// `Debug` is written by hand: the database URL's password is redacted, so printing a
/// configuration never leaks it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
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

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.database_url.as_deref().map(redact_url);
        f.debug_struct("Config")
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

impl Default for Config {
    fn default() -> Self {
        Config {
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

/// `Debug` redacts the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM file with an RS256 or ES256 public key.
    pub public_key_file: Option<PathBuf>,
    /// Claim that carries the role (a string or an array of strings).
    pub role_claim: String,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("public_key_file", &self.public_key_file)
            .field("role_claim", &self.role_claim)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: None,
            public_key_file: None,
            role_claim: "role".into(),
            audience: None,
            issuer: None,
            leeway_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `rowcast=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Where capture reads changes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Row triggers write each change to `rowcast.changes` in the application's transaction.
    Triggers,
    /// A logical replication slot (`pgoutput`): the application's transactions write nothing
    /// extra; rowcast appends the decoded changes to `rowcast.changes` in batches.
    Logical,
}

impl CaptureMode {
    /// The name used in configuration files and `ROWCAST_CAPTURE_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Triggers => "triggers",
            CaptureMode::Logical => "logical",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// How changes are captured: `triggers` (row triggers append to `rowcast.changes`) or
    /// `logical` (logical decoding of the WAL through a replication slot; needs
    /// `wal_level = logical` and a role with REPLICATION).
    pub mode: CaptureMode,
    /// Replication slot used by `logical` mode (created by `rowcast migrate`).
    pub slot: String,
    /// Publication used by `logical` mode (created by `rowcast migrate`).
    pub publication: String,
    /// Most change-log rows read and enriched at once.
    pub batch_size: i64,
    /// Poll interval while changes keep arriving.
    #[serde(with = "humantime_serde")]
    pub active_poll: Duration,
    /// Quiet time after which capture parks and waits for a NOTIFY wake-up.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Safety poll while parked (a NOTIFY can be lost; the log cannot).
    #[serde(with = "humantime_serde")]
    pub idle_poll: Duration,
    /// `/readyz` fails when the oldest unconsumed change is older than this.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureMode::Triggers,
            slot: "rowcast".into(),
            publication: "rowcast".into(),
            batch_size: 1000,
            active_poll: Duration::from_millis(5),
            idle_after: Duration::from_millis(500),
            idle_poll: Duration::from_secs(1),
            max_lag: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Events queued for one session before it counts as too slow and is closed (4008).
    pub session_queue: usize,
    /// Recent events kept in memory to serve resumes without a database query.
    pub replay_buffer: usize,
    /// Largest client frame accepted on `/ws`.
    pub max_frame_bytes: usize,
    /// Interval of WebSocket pings sent by the server.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            session_queue: 4096,
            replay_buffer: 4096,
            max_frame_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(25),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Change-log rows older than this are pruned; resuming from before them needs a resync.
    #[serde(with = "humantime_serde")]
    pub changes: Duration,
    /// Delivered webhook deliveries (and their attempts) older than this are pruned.
    #[serde(with = "humantime_serde")]
    pub deliveries: Duration,
    /// Rows deleted per pruning statement.
    pub batch: i64,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            changes: Duration::from_secs(24 * 3600),
            deliveries: Duration::from_secs(7 * 24 * 3600),
            batch: 5000,
            interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Delays between attempts; the number of entries + 1 is the number of attempts.
    #[serde(deserialize_with = "durations", serialize_with = "ser_durations")]
    pub retry_schedule: Vec<Duration>,
    /// Total time allowed for one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time allowed to connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Networks that are allowed although private (tests, local setups).
    #[serde(deserialize_with = "comma_list")]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Deliveries in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint.
    pub per_endpoint_concurrency: usize,
    /// How long a rotated-out secret keeps signing as a second signature.
    #[serde(with = "humantime_serde")]
    pub secret_grace: Duration,
    /// Largest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// How long a worker holds a claimed delivery; must exceed `timeout`. A worker that
    /// dies mid-request releases nothing: another takes the delivery when the lease ends.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often workers look for due deliveries (retries) when nothing woke them.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Most deliveries claimed by one query.
    pub batch: i64,
    /// Most change-log rows turned into deliveries by one outbox transaction.
    pub enqueue_batch: i64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let m = 60;
        WebhookConfig {
            retry_schedule: [5, 5 * m, 30 * m, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            allow_cidrs: Vec::new(),
            concurrency: 64,
            per_endpoint_concurrency: 16,
            secret_grace: Duration::from_secs(24 * 3600),
            max_retry_after: Duration::from_secs(3600),
            lease: Duration::from_secs(45),
            poll_interval: Duration::from_secs(1),
            batch: 256,
            enqueue_batch: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins allowed by CORS (`*` for any). Empty disables CORS headers.
    #[serde(deserialize_with = "comma_list")]
    pub cors_origins: Vec<String>,
    /// Largest request body accepted by the API.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cors_origins: vec!["*".into()],
            max_body_bytes: 64 * 1024,
        }
    }
}

/// What a captured table is to rowcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Events `<entity>.update` to the entity's rooms.
    #[default]
    Entity,
    /// Events `notification` to `user:<recipient>`, carrying the related entity.
    Notification,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name, optionally schema-qualified (`public.tickets`).
    pub table: String,
    /// Entity name used in event names (`ticket` → `ticket.update`).
    pub entity: String,
    #[serde(default)]
    pub kind: TableKind,
    /// Room every event of this table goes to (entity tables).
    #[serde(default)]
    pub room: Option<String>,
    /// Further rooms built from the row, e.g. `tickets:{ticket_id}`.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Columns that never leave rowcast.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// Key columns; default: the primary key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Notifications: column holding the recipient user id.
    #[serde(default)]
    pub recipient_column: Option<String>,
    /// Notifications: column naming the related entity (`comment`, `ticket`, …).
    #[serde(default)]
    pub related_type_column: Option<String>,
    /// Notifications: column holding the related entity's key.
    #[serde(default)]
    pub related_id_column: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// Roles allowed to join; `*` means every signed-in user.
    pub roles: Vec<String>,
}

impl Config {
    /// Loads defaults, then the TOML file (if given or if `rowcast.toml` exists), then the
    /// environment, and validates the result.
    // `map(env_key_to_path)` does not compile (the fn is not general enough over lifetimes),
    // so the closure clippy calls redundant stays.
    #[allow(clippy::redundant_closure)]
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
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
        let mut config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.into_iter().map(|e| e.to_string()).collect()))?;
        config.apply_defaults();
        config.validate()?;
        Ok(config)
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

    /// Checks the configuration as a whole; every problem is listed, not only the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.jwt.secret.is_some() && self.jwt.public_key_file.is_some() {
            problems.push(
                "set either ROWCAST_JWT_SECRET (HS256) or ROWCAST_JWT_PUBLIC_KEY_FILE (RS256/ES256), not both"
                    .to_string(),
            );
        }
        if let Some(secret) = &self.jwt.secret
            && secret.len() < 16
        {
            problems.push("jwt.secret (ROWCAST_JWT_SECRET) must be at least 16 bytes".into());
        }
        if let Some(path) = &self.jwt.public_key_file
            && !path.exists()
        {
            problems.push(format!(
                "jwt.public_key_file {} does not exist",
                path.display()
            ));
        }
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
        for (what, name) in [
            ("capture.slot", &self.capture.slot),
            ("capture.publication", &self.capture.publication),
        ] {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                problems.push(format!(
                    "{what} {name:?} must be 1-63 lowercase letters, digits or _"
                ));
            }
        }
        if self.capture.batch_size < 1 || self.capture.batch_size > 100_000 {
            problems.push("capture.batch_size must be between 1 and 100000".into());
        }
        if self.hub.session_queue < 16 {
            problems.push("hub.session_queue must be at least 16".into());
        }
        if self.webhook.retry_schedule.len() > 50 {
            problems.push("webhook.retry_schedule has more than 50 entries".into());
        }
        if self.webhook.concurrency == 0 || self.webhook.per_endpoint_concurrency == 0 {
            problems.push(
                "webhook.concurrency and webhook.per_endpoint_concurrency must be at least 1"
                    .into(),
            );
        }
        if self.webhook.lease <= self.webhook.timeout {
            problems.push(
                "webhook.lease must be longer than webhook.timeout (a lease that ends mid-request lets a second worker send the same delivery)"
                    .into(),
            );
        }
        if self.webhook.batch < 1 || self.webhook.enqueue_batch < 1 {
            problems.push("webhook.batch and webhook.enqueue_batch must be at least 1".into());
        }
        if self.webhook.poll_interval.is_zero() {
            problems.push("webhook.poll_interval must be positive".into());
        }
        if self.retention.batch < 1 {
            problems.push("retention.batch must be at least 1".into());
        }
        let mut entities = std::collections::HashSet::new();
        for t in &self.tables {
            let at = format!("table {}", t.table);
            if !is_ident_path(&t.table) {
                problems.push(format!("{at}: not a valid table name"));
            }
            if !entities.insert(t.entity.clone()) {
                problems.push(format!("{at}: entity name {} is used twice", t.entity));
            }
            if t.entity.is_empty()
                || !t
                    .entity
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                problems.push(format!("{at}: entity must be letters, digits or _"));
            }
            for c in t.hidden.iter().chain(&t.key) {
                if !is_ident(c) {
                    problems.push(format!("{at}: {c:?} is not a valid column name"));
                }
            }
            match t.kind {
                TableKind::Entity => {
                    if t.room.is_none() && t.rooms.is_empty() {
                        problems.push(format!("{at}: an entity table needs `room` or `rooms`"));
                    }
                }
                TableKind::Notification => {
                    if t.recipient_column.is_none() {
                        problems.push(format!(
                            "{at}: a notification table needs `recipient_column`"
                        ));
                    }
                    if t.related_type_column.is_some() != t.related_id_column.is_some() {
                        problems.push(format!(
                            "{at}: set both `related_type_column` and `related_id_column`, or neither"
                        ));
                    }
                }
            }
            for r in t.room.iter().chain(&t.rooms) {
                if let Err(e) = crate::route::RoomTemplate::parse(r) {
                    problems.push(format!("{at}: room {r:?}: {e}"));
                }
            }
        }
        for (room, rc) in &self.rooms {
            if room.starts_with("user:") {
                problems.push(format!(
                    "rooms.{room}: user rooms are private to their user and cannot be configured"
                ));
            }
            if rc.roles.is_empty() {
                problems.push(format!("rooms.{room}: roles is empty (nobody could join)"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
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

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn is_ident_path(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_ident(p))
}

/// Accepts `["5s", "5m"]` or `"5s,5m"` (as set from the environment).
fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let items: Vec<String> = comma_list(d)?;
    items
        .iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. 5s, 5m, 2h"
                ))
            })
        })
        .collect()
}

fn ser_durations<S: serde::Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    let items: Vec<String> = v
        .iter()
        .map(|d| humantime::format_duration(*d).to_string())
        .collect();
    items.serialize(s)
}

/// Accepts a TOML array or a comma-separated string.
fn comma_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    let raw = match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };
    raw.iter()
        .map(|s| {
            s.parse::<T>()
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
        })
        .collect()
}

/// The demo helpdesk mapping: what rowcast captures when the file names no tables.
pub fn default_tables() -> Vec<TableConfig> {
    let entity =
        |table: &str, entity: &str, room: &str, rooms: &[&str], hidden: &[&str]| TableConfig {
            table: format!("public.{table}"),
            entity: entity.into(),
            kind: TableKind::Entity,
            room: Some(room.into()),
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            hidden: hidden.iter().map(|s| s.to_string()).collect(),
            key: Vec::new(),
            recipient_column: None,
            related_type_column: None,
            related_id_column: None,
        };
    vec![
        entity("tickets", "ticket", "tickets", &["tickets:{id}"], &[]),
        entity(
            "comments",
            "comment",
            "comments",
            &["tickets:{ticket_id}"],
            &[],
        ),
        entity("users", "user", "users", &[], &["password_hash"]),
        entity("kb_articles", "kb", "kb", &[], &[]),
        entity(
            "attachments",
            "attachment",
            "attachments",
            &["tickets:{ticket_id}"],
            &[],
        ),
        TableConfig {
            table: "public.notifications".into(),
            entity: "notification".into(),
            kind: TableKind::Notification,
            room: None,
            rooms: Vec::new(),
            hidden: Vec::new(),
            key: Vec::new(),
            recipient_column: Some("user_id".into()),
            related_type_column: Some("related_type".into()),
            related_id_column: Some("related_id".into()),
        },
    ]
}

/// The demo helpdesk allow-lists.
pub fn default_rooms() -> BTreeMap<String, RoomConfig> {
    let staff = || RoomConfig {
        roles: vec!["agent".into(), "admin".into()],
    };
    let mut rooms = BTreeMap::new();
    for r in ["tickets", "tickets:*", "comments", "attachments", "users"] {
        rooms.insert(r.to_string(), staff());
    }
    rooms.insert(
        "kb".into(),
        RoomConfig {
            roles: vec!["*".into()],
        },
    );
    rooms
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
        let mut c = Config {
            database_url: Some("postgres://app:s3cr3t-pw@db:5432/helpdesk".into()),
            ..Config::default()
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
        let mut c = Config::default();
        c.apply_defaults();
        c.validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = Config::default();
        c.apply_defaults();
        c.jwt.secret = Some("short".into());
        c.tables[0].entity = "comment".into();
        c.rooms
            .insert("user:1".into(), RoomConfig { roles: vec![] });
        let ConfigError::Invalid(p) = c.validate().unwrap_err();
        assert_eq!(p.len(), 4, "{p:#?}");
    }
}
