//! The HTTP surface: shared state, the router, errors, health and metrics.

pub mod auth;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::capture::CaptureStatus;
use crate::config::Config;
use crate::hub::Hub;
use auth::{AuthError, Authenticator};

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub pool: Pool,
    pub capture: Arc<CaptureStatus>,
    /// Cancelled when the server shuts down: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// The webhook machinery the API talks to (SSRF guard, worker wake-up).
    pub webhooks: Arc<crate::webhook::Webhooks>,
}

/// An error answered to an API client: a status, a stable code and a clean message.
/// The cause (if any) is logged, never shown.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// A failure of ours: logged with its cause, shown as a generic 500/503.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "request failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service could not complete the request; retry later",
        )
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            axum::Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        res
    }
}

/// Routes of this module; transports and webhooks add theirs in `crate::server`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// Alive: the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready: the database answers, capture is connected and reading, and lag is in bounds.
async fn readyz(State(app): State<AppState>) -> Response {
    let db_ok = tokio::time::timeout(Duration::from_secs(2), async {
        let client = app.pool.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let connected = app
        .capture
        .connected
        .load(std::sync::atomic::Ordering::Relaxed);
    let read_bound = (app.config.capture.idle_poll * 5).max(Duration::from_secs(5));
    let reading = app.capture.since_last_read() < read_bound;
    let lag = app.capture.lag();
    let lag_ok = lag < app.config.capture.max_lag;
    let ready = db_ok && connected && reading && lag_ok && !app.shutdown.is_cancelled();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": db_ok,
        "capture_connected": connected,
        "capture_reading": reading,
        "capture_lag_seconds": lag.as_secs_f64(),
        "max_lag_seconds": app.config.capture.max_lag.as_secs_f64(),
        "position": app.capture.position(),
        "shutting_down": app.shutdown.is_cancelled(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    metrics::gauge!("rowcast_sessions").set(app.hub.session_count() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::render_metrics(),
    )
}
