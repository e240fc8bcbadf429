//! Logs (`tracing`, human or JSON), the HTTP access log, and the Prometheus recorder.
//!
//! What is never logged: tokens (the access log writes the path, never the query string,
//! which may carry `?token=`), the database URL or its password, webhook secrets, and row
//! data (hidden columns never reach an event in the first place).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use serde::{Deserialize, Serialize};

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

/// Targets capped at `info` whatever the configured level: at `debug` they log statement
/// parameters, which carry webhook secrets and row values.
const NEVER_DEBUG: &[&str] = &["tokio_postgres::query", "tokio_postgres::prepare"];

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. Safe to
/// call more than once (later calls do nothing).
pub fn init_logs(config: &LogConfig) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for target in NEVER_DEBUG {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once).
pub fn init_metrics() {
    PROMETHEUS.get_or_init(|| {
        let latency = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let sizes = [
            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes));
        match builder {
            Ok(b) => {
                let recorder = b.build_recorder();
                let handle = recorder.handle();
                let installed = metrics::set_global_recorder(recorder).ok().map(|_| handle);
                if installed.is_some() {
                    describe_metrics();
                }
                installed
            }
            Err(_) => None,
        }
    });
}

/// Help texts, and zero values for the series that exist before anything happens, so that
/// dashboards and alerts see `0` rather than "no data".
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "rowcast_connections",
        "Open client sessions, by transport (websocket, socketio, sse)."
    );
    describe_gauge!(
        "rowcast_connections_open",
        "Open TCP connections to the HTTP listener, upgraded WebSockets included."
    );
    describe_counter!(
        "rowcast_connections_refused_total",
        "Connections or handshakes answered 503, by reason (max_connections, pending_socketio)."
    );
    describe_counter!(
        "rowcast_connections_timed_out_total",
        "Connections closed by a deadline, by reason (header_read, idle)."
    );
    describe_gauge!(
        "rowcast_joined_rooms",
        "Room memberships over all sessions, not counting each user's private room."
    );
    describe_gauge!(
        "rowcast_sessions",
        "Open client sessions of every transport."
    );
    describe_counter!(
        "rowcast_events_emitted_total",
        "Events published to the hub, by event name (e.g. ticket.update, notification)."
    );
    describe_counter!(
        "rowcast_event_encodings_total",
        "Events encoded for the wire, by transport: once per event and view (and room on websocket), not per session."
    );
    describe_gauge!(
        "rowcast_replay_buffer_bytes",
        "Bytes of events held by the replay buffer (bounded by hub.replay_buffer_bytes)."
    );
    describe_counter!(
        "rowcast_frames_refused_total",
        "Client WebSocket frames refused from their header, by reason (too_large: over hub.max_frame_bytes by more than a quarter)."
    );
    describe_histogram!(
        "rowcast_commit_to_emit_seconds",
        "Time from the commit of a change to its publication to sessions."
    );
    describe_gauge!(
        "rowcast_capture_lag_seconds",
        "Age of the oldest change not yet consumed by capture (0 when caught up)."
    );
    describe_gauge!(
        "rowcast_capture_slot_retained_bytes",
        "Logical mode: WAL the replication slot keeps on the server (grows while nobody consumes it)."
    );
    describe_counter!(
        "rowcast_capture_decoded_changes_total",
        "Logical mode: changes decoded from the replication slot and appended to the log."
    );
    describe_counter!(
        "rowcast_capture_large_transactions_total",
        "Logical mode: transactions larger than capture.batch_size, written to the log in chunks before their commit arrived."
    );
    describe_histogram!(
        "rowcast_capture_batch_size",
        "Changes read from the log per capture batch."
    );
    describe_counter!(
        "rowcast_slow_client_disconnects_total",
        "Sessions closed because their queue was full (WebSocket close 4008)."
    );
    describe_counter!(
        "rowcast_capture_errors_total",
        "Capture interruptions (lost connection, failed query); capture reconnects and resumes."
    );
    describe_counter!(
        "rowcast_changes_pruned_total",
        "Change-log rows deleted by retention."
    );
    describe_counter!(
        "rowcast_socketio_recoveries_total",
        "Socket.IO reconnects that presented a pid, by outcome: recovered, fresh (unknown, foreign or malformed), expired (offset pruned)."
    );
    describe_counter!(
        "rowcast_audience_unresolved_total",
        "Rows whose audience rule could not be evaluated, by table: withheld from the users the rule concerns."
    );
    describe_counter!(
        "rowcast_changelog_malformed_total",
        "Change-log rows that could not be read (an unknown op code); logged once and skipped."
    );
    describe_gauge!(
        "rowcast_build_info",
        "Always 1; the version label names the running build."
    );
    metrics::gauge!("rowcast_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for transport in ["websocket", "socketio", "sse"] {
        metrics::gauge!("rowcast_connections", "transport" => transport).increment(0.0);
        metrics::counter!("rowcast_event_encodings_total", "transport" => transport).increment(0);
    }
    metrics::gauge!("rowcast_joined_rooms").increment(0.0);
    metrics::counter!("rowcast_connections_refused_total", "reason" => "max_connections")
        .increment(0);
    metrics::counter!("rowcast_slow_client_disconnects_total").increment(0);
    metrics::counter!("rowcast_capture_errors_total").increment(0);
    metrics::counter!("rowcast_changes_pruned_total").increment(0);
}

/// Access log (level `debug`): method, path, status and latency of every HTTP request.
/// The query string is left out on purpose: `/ws?token=<jwt>` must not reach the logs.
pub async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    tracing::debug!(
        %method,
        path,
        status = res.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "http request"
    );
    res
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render_metrics() -> String {
    init_metrics();
    PROMETHEUS
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

/// An error and its causes, `outer: inner: root`, for messages an operator acts on
/// ("error connecting to server: Connection refused"). Driver errors never carry the
/// connection string; PostgreSQL's `DETAIL:` lines are dropped because they can quote row
/// values ("Failing row contains (...)"), hidden columns included.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let without_detail = |text: String| -> String {
        text.lines()
            .filter(|l| !l.starts_with("DETAIL:"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = without_detail(e.to_string());
    let mut source = e.source();
    while let Some(s) = source {
        let text = without_detail(s.to_string());
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_names_the_root_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = std::io::Error::other(io);
        assert_eq!(super::error_chain(&outer), "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("error connecting to server")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            super::error_chain(&e),
            "error connecting to server: connection refused"
        );
        let e = Outer(std::io::Error::other(
            "ERROR: new row violates check constraint\nDETAIL: Failing row contains (1, secret).\nHINT: fix it",
        ));
        assert_eq!(
            super::error_chain(&e),
            "error connecting to server: ERROR: new row violates check constraint HINT: fix it"
        );
    }
}
