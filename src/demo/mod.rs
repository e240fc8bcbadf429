//! `rowcast demo`: a throwaway PostgreSQL with the demo helpdesk, served, with a gentle
//! workload. Everything it creates is removed when it stops.

mod workload;

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::pgtemp::{PgTemp, PgTempOptions};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    PgTemp(#[from] crate::pgtemp::PgTempError),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] crate::server::RunError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// The demo schema and its sample data.
pub const HELPDESK_SQL: &str = include_str!("../../sql/demo/helpdesk.sql");
pub const SEED_SQL: &str = include_str!("../../sql/demo/seed.sql");

/// Loads the demo helpdesk schema and sample data into `client`'s database.
pub async fn load_helpdesk(
    client: &tokio_postgres::Client,
    seed: bool,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(HELPDESK_SQL).await?;
    if seed {
        client.batch_execute(SEED_SQL).await?;
    }
    Ok(())
}

pub async fn run(
    config: Config,
    listen: SocketAddr,
    workload: bool,
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    if config.database_url.is_some() {
        tracing::info!("demo ignores DATABASE_URL: it always runs on its own throwaway PostgreSQL");
    }
    eprintln!("starting a throwaway PostgreSQL …");
    let pg = PgTemp::start(PgTempOptions::default())?;
    pg.create_database("helpdesk")?;
    let url = pg.url("helpdesk");
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    load_helpdesk(&client, true).await?;
    let mut settings = config.into_settings();
    settings.database_url = Some(url.clone());
    if settings.jwt.secret.is_none() && settings.jwt.public_key_file.is_none() {
        settings.jwt.secret = Some(format!("demo-{}", uuid::Uuid::new_v4().simple()));
    }
    let config = settings.validate()?;
    crate::migrate::migrate(&mut client, &config.tables, &config.capture).await?;
    let auth = crate::api::auth::Authenticator::from_config(&config.jwt)
        .map_err(crate::server::RunError::from)?;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{listen} is in use; picking a free port");
            let any = SocketAddr::new(listen.ip(), 0);
            tokio::net::TcpListener::bind(any)
                .await
                .map_err(|e| DemoError::Listen(any, e))?
        }
        Err(e) => return Err(DemoError::Listen(listen, e)),
    };
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::Listen(listen, e))?;
    let base = format!("http://{addr}");
    let ttl = 12 * 3600;
    let agent = auth.issue("1", "agent", ttl).unwrap_or_default();
    let admin = auth.issue("2", "admin", ttl).unwrap_or_default();
    let customer = auth.issue("3", "customer", ttl).unwrap_or_default();
    let server = tokio::spawn(crate::server::run(config, listener, shutdown.clone()));
    // Print the URLs once the server is ready, so they work when a person (or a script) uses them.
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if server.is_finished() {
            break;
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!();
    println!("rowcast demo is running");
    println!("  console (agent):    {base}/?token={agent}");
    println!("  console (customer): {base}/?token={customer}");
    println!("  WebSocket:          ws://{addr}/ws?token=<token>");
    println!("  Socket.IO:          io(\"{base}\", {{ auth: {{ token }} }})");
    println!("  SSE:                {base}/events?rooms=tickets,comments&token=<token>");
    println!("  database:           {url}");
    println!("  tokens (12 h):");
    println!("    agent    (sub 1): {agent}");
    println!("    admin    (sub 2): {admin}");
    println!("    customer (sub 3): {customer}");
    println!("  Ctrl-C stops it and removes the database.");
    println!();
    let driver = workload.then(|| {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = workload::drive(client, stop).await {
                tracing::warn!(error = %e, "demo workload stopped");
            }
        })
    });
    let served = server.await;
    if let Some(d) = driver {
        d.abort();
    }
    conn.abort();
    drop(pg);
    match served {
        Ok(result) => result?,
        Err(e) => tracing::error!(error = %e, "server task failed"),
    }
    eprintln!("demo stopped; its database was removed");
    Ok(())
}
