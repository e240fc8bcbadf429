//! Wires the stages together and serves HTTP until shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::auth::Authenticator;
use crate::api::{self, AppState};
use crate::capture::{Capture, CaptureMode, CaptureStatus, Sink};
use crate::config::Config;
use crate::enrich::{Enricher, LogHistory};
use crate::event::{Event, Position};
use crate::hub::{Acl, Hub};
use crate::{catalog, changelog, transport};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Key(#[from] api::auth::KeyError),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "rowcast's schema in this database lacks migrations {}: run `rowcast migrate` (or `serve --migrate`)", .0.join(", ")
    )]
    NotMigrated(Vec<String>),
    #[error("the database does not match the configuration (run `rowcast check` for details):\n  - {}", .0.join("\n  - "))]
    Mismatch(Vec<String>),
    #[error("webhooks: {0}")]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error("database connections: {0}")]
    Pool(#[from] crate::db::PoolError),
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::db::TlsError),
}

/// Capture's sink in a running server: the hub, then a poke for the outbox writer.
struct Fanout {
    hub: Arc<Hub>,
    after_batch: Arc<Notify>,
}

impl Sink for Fanout {
    fn publish(&self, events: Vec<Event>, upto: Position) {
        self.hub.publish(events, upto);
        self.after_batch.notify_one();
    }
}

/// Runs rowcast (capture, hub, HTTP) on `listener` until `shutdown` is cancelled, then shuts
/// down in order within one `shutdown_timeout` (see [`shut_down`]): stop accepting, close
/// sessions (1001), stop workers, finish HTTP requests, close the database pool.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    crate::telemetry::init_metrics();
    let auth = Arc::new(Authenticator::from_config(&config.jwt)?);
    let url = config.require_database_url()?;
    let pool = crate::db::pool(url, config.database_ca_file.as_deref(), config.pool_size)?;
    let client = pool
        .get()
        .await
        .map_err(|e| RunError::Connect(crate::telemetry::error_chain(&e)))?;
    let pending = crate::migrate::pending(&**client).await?;
    if !pending.is_empty() {
        return Err(RunError::NotMigrated(pending));
    }
    let (catalog, mut problems) =
        catalog::resolve(&**client, &config.tables, catalog::Purpose::Serve).await?;
    if config.capture.mode == CaptureMode::Logical {
        let slot = &config.capture.slot;
        if changelog::slot(&**client, slot).await?.is_none() {
            problems.push(format!(
                "capture.mode = \"logical\" but replication slot {slot} does not exist: run `rowcast migrate` with the same configuration"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(RunError::Mismatch(problems));
    }
    let start = changelog::start_position(&**client).await?;
    catalog
        .withheld
        .replace(catalog::drift(&**client, &catalog).await?);
    drop(client);

    let catalog = Arc::new(catalog);
    let enricher = Enricher::new(catalog.clone(), pool.clone());
    let history = Arc::new(LogHistory {
        enricher: enricher.clone(),
    });
    let hub = Arc::new(Hub::new(
        config.hub.clone(),
        Acl::new(&config.rooms),
        Some(history),
        start,
    ));
    let status = Arc::new(CaptureStatus::new(
        start,
        &config.capture,
        catalog.withheld.clone(),
    ));
    let after_batch = Arc::new(Notify::new());
    let tracker = TaskTracker::new();
    let workers = CancellationToken::new();

    tracker.spawn(
        Capture {
            config: config.capture.clone(),
            database_url: url.to_string(),
            tls: crate::db::tls(config.database_ca_file.as_deref())?,
            ca_file: config.database_ca_file.clone(),
            catalog: catalog.clone(),
            enricher: enricher.clone(),
            sink: Arc::new(Fanout {
                hub: hub.clone(),
                after_batch: after_batch.clone(),
            }),
            status: status.clone(),
            handoff: Default::default(),
        }
        .run(start, workers.clone()),
    );
    tracker.spawn(crate::retention::run(
        config.retention.clone(),
        pool.clone(),
        workers.clone(),
    ));
    let webhooks = crate::webhook::start(
        &config.webhook,
        &pool,
        enricher.clone(),
        after_batch.clone(),
        start,
        // Half the shutdown deadline for requests in flight, the rest to store results.
        config.shutdown_timeout / 2,
        &tracker,
        workers.clone(),
    )
    .await?;

    let (recovery, recovery_writer) =
        crate::recovery::Recovery::start(pool.clone(), workers.clone());
    tracker.spawn(recovery_writer);
    let state = AppState {
        hub: hub.clone(),
        enricher: enricher.clone(),
        recovery,
        auth,
        pool: pool.clone(),
        capture: status,
        shutdown: shutdown.clone(),
        webhooks,
    };
    let app = router(state, &config);
    tracing::info!(listen = %listener.local_addr()?, position = %start, "rowcast serving");
    let http_shutdown = shutdown.clone();
    let http = config.http.clone();
    let server = async move { crate::listener::serve(listener, app, &http, http_shutdown).await };
    let mut served = tokio::spawn(server);
    // `biased`: the HTTP server also stops on `shutdown`, and when both are ready the
    // signal must win, or a normal shutdown would be taken for the server dying.
    let served_early = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        r = &mut served => Some(r),
    };
    let served = match served_early {
        // It finished because of the shutdown itself (a completed handle cannot be awaited
        // again).
        Some(_) if shutdown.is_cancelled() => tokio::spawn(async { Ok(()) }),
        Some(r) => {
            // The HTTP server died on its own: stop everything else, then report why.
            shutdown.cancel();
            workers.cancel();
            tracker.close();
            let _ = tokio::time::timeout(config.shutdown_timeout, tracker.wait()).await;
            pool.close();
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RunError::Io(e)),
                Err(e) => Err(RunError::Io(std::io::Error::other(e))),
            };
        }
        None => served,
    };
    shut_down(&config, &hub, &workers, &tracker, served).await;
    pool.close();
    tracing::info!("stopped");
    Ok(())
}

/// The shutdown sequence, all within one `shutdown_timeout`:
/// 1. the listener stops accepting (the accept loop watches the same token) and
///    `/readyz` answers 503;
/// 2. sessions see the token and close (WebSocket 1001 "reconnect"); we wait until they
///    are gone, so no client is cut off mid-frame;
/// 3. workers (capture, pruning, webhook delivery) are cancelled and awaited: deliveries
///    in flight finish or release their lease;
/// 4. remaining HTTP requests finish; the caller then closes the database pool.
///
/// Whatever is still running at the deadline is dropped (and logged).
async fn shut_down(
    config: &Config,
    hub: &Hub,
    workers: &CancellationToken,
    tracker: &TaskTracker,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let started = tokio::time::Instant::now();
    let deadline = started + config.shutdown_timeout;
    tracing::info!(
        sessions = hub.session_count(),
        timeout = ?config.shutdown_timeout,
        "shutting down: closing sessions, then stopping workers"
    );
    let drained = tokio::time::timeout_at(deadline, async {
        while hub.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sessions = hub.session_count(),
            "sessions still open at the shutdown deadline"
        );
    }
    workers.cancel();
    tracker.close();
    // Workers get at least a moment even when the sessions used up the deadline.
    let workers_deadline = deadline.max(tokio::time::Instant::now() + Duration::from_millis(500));
    if tokio::time::timeout_at(workers_deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within the shutdown deadline");
    }
    let http_deadline = deadline.max(tokio::time::Instant::now() + Duration::from_millis(200));
    if tokio::time::timeout_at(http_deadline, served)
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still running at the shutdown deadline");
    }
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        "sessions closed, workers stopped"
    );
}

fn router(state: AppState, config: &Config) -> Router {
    let cors = cors_layer(&config.http.cors_origins);
    let body_limit = config.http.max_body_bytes;
    let socketio = transport::socketio::layer(state.clone(), config.http.socketio_connect_timeout);
    let pending = transport::socketio::Pending::new(&config.http);
    Router::new()
        .merge(api::routes())
        .merge(crate::console::routes())
        .route("/ws", get(transport::ws::handler))
        .route("/events", get(transport::sse::handler))
        .route("/api/changes", get(transport::poll::handler))
        .layer(axum::middleware::from_fn(crate::telemetry::access_log))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(socketio)
        .layer(axum::middleware::map_request(
            transport::socketio::own_request_head,
        ))
        .layer(axum::middleware::from_fn_with_state(
            pending,
            transport::socketio::admit,
        ))
        .layer(cors)
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let base = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(Any)
    } else {
        let list: Vec<axum::http::HeaderValue> =
            origins.iter().filter_map(|o| o.parse().ok()).collect();
        base.allow_origin(AllowOrigin::list(list))
    }
}
