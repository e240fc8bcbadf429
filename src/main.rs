//! The `rowcast` command: serve | migrate | check | demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rowcast::config::Config;
use tokio_util::sync::CancellationToken;

/// jemalloc: about half the CPU per captured change of glibc's malloc, which spent much of
/// it consolidating free lists.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, compiled in (its `malloc_conf`): unused pages go back to the OS
/// after a second, from a background thread.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: a pointer to a static, read-only C string.
unsafe impl Sync for MallocConf {}
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

#[derive(Parser)]
#[command(
    name = "rowcast",
    version,
    about = "PostgreSQL row changes as real-time events: WebSocket rooms (Socket.IO v4), SSE, polling and signed webhooks"
)]
struct Cli {
    /// TOML configuration file (default: rowcast.toml if present). Environment variables override it.
    #[arg(long, global = true, env = "ROWCAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge: HTTP, WebSocket, Socket.IO, SSE and webhook workers.
    Serve {
        /// Apply migrations and install triggers before serving.
        #[arg(long)]
        migrate: bool,
    },
    /// Install or upgrade rowcast's schema and the capture triggers (idempotent).
    Migrate,
    /// Compare the configuration with the live database; exit 1 if anything is wrong.
    Check,
    /// Start a throwaway PostgreSQL with the demo helpdesk, serve it and drive a workload.
    Demo {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Do not drive the sample workload.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_async(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    rowcast::telemetry::init_logs(&config.log);
    match cli.command {
        Command::Serve { migrate } => {
            if migrate {
                run_migrate(&config).await?;
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            rowcast::run(config, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            run_migrate(&config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let (client, conn) = connect(&config).await?;
            let problems =
                rowcast::migrate::check(&client, &config.tables, &config.capture).await?;
            drop(client);
            conn.abort();
            if problems.is_empty() {
                println!(
                    "ok: {} tables configured, schema and triggers up to date",
                    config.tables.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("problem: {p}");
                }
                println!("{} problem(s) found", problems.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Demo { listen, quiet } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            rowcast::demo::run(config, listen, !quiet, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn connect(
    config: &Config,
) -> anyhow::Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let url = config.require_database_url()?;
    let tls = rowcast::db::tls(config.database_ca_file.as_deref())?;
    let (client, connection) = async { rowcast::db::session(url)?.connect(tls).await }
        .await
        .map_err(|e: tokio_postgres::Error| {
            anyhow::anyhow!(
                "cannot connect to the database: {}",
                rowcast::telemetry::error_chain(&e)
            )
        })?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

async fn run_migrate(config: &Config) -> anyhow::Result<()> {
    let (mut client, conn) = connect(config).await?;
    let report = rowcast::migrate::migrate(&mut client, &config.tables, &config.capture).await?;
    for line in &report {
        println!("{line}");
    }
    println!("migrate: done");
    drop(client);
    conn.abort();
    Ok(())
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    token.cancel();
}
