//! A throwaway PostgreSQL cluster from the local server binaries, in a temp directory.
//!
//! Used by `rowcast demo`, the tests and the benchmarks. The cluster is removed on `Drop`.
//! PostgreSQL refuses to run as root: when we are root, `initdb` and `pg_ctl` run as the
//! `postgres` system user through `runuser`, on a directory chowned to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them (Debian/Ubuntu: \
         `apt-get install postgresql`) or point ROWCAST_PG_BIN at the directory that holds them"
    )]
    NoBinaries,
    #[error(
        "running as root needs the `postgres` system user and `runuser` to start PostgreSQL: {0}"
    )]
    NoPostgresUser(String),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Options for a new cluster.
#[derive(Debug, Clone, Default)]
pub struct PgTempOptions {
    /// `fsync=off` makes tests fast; benchmarks of write throughput keep it on.
    pub fsync: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

/// A running throwaway cluster. Stops and deletes itself on drop.
#[derive(Debug)]
pub struct PgTemp {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    options: PgTempOptions,
}

impl PgTemp {
    /// Creates and starts a cluster on a free loopback port.
    pub fn start(options: PgTempOptions) -> Result<PgTemp, PgTempError> {
        let bin = find_bin_dir().ok_or(PgTempError::NoBinaries)?;
        let as_postgres = is_root();
        let root = std::env::temp_dir().join(format!(
            "rowcast-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&root)?;
        let mut pg = PgTemp {
            root,
            bin,
            port: free_port()?,
            as_postgres,
            options,
        };
        if as_postgres {
            let (uid, gid) = postgres_ids().map_err(PgTempError::NoPostgresUser)?;
            std::os::unix::fs::chown(&pg.root, Some(uid), Some(gid))?;
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data_dir(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        // The free port was released for the server to take: another process may bind it
        // in between (an outgoing connection's ephemeral port, say). Take another one.
        let mut attempts = 0;
        loop {
            match pg.start_server() {
                Err(PgTempError::Step { detail, .. })
                    if detail.contains("Address already in use") && attempts < 5 =>
                {
                    attempts += 1;
                    pg.port = free_port()?;
                }
                done => return done.map(|()| pg),
            }
        }
    }

    fn data_dir(&self) -> String {
        self.root.join("data").display().to_string()
    }

    /// The directory that holds the cluster (data, log, socket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection string for `dbname` as the superuser `postgres`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}?connect_timeout=5",
            self.port
        )
    }

    /// Directory of the server binaries in use (initdb, pg_ctl, pgbench).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    fn server_opts(&self) -> String {
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c wal_level=logical -c max_connections=300 -c fsync={} -c synchronous_commit={}",
            self.port,
            self.root.display(),
            if self.options.fsync { "on" } else { "off" },
            if self.options.fsync { "on" } else { "off" },
        );
        for (k, v) in &self.options.settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        opts
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) -> Result<(), PgTempError> {
        let log = self.root.join("server.log").display().to_string();
        let opts = self.server_opts();
        self.run(
            "pg_ctl start",
            &[
                "start",
                "-D",
                &self.data_dir(),
                "-w",
                "-t",
                "60",
                "-l",
                &log,
                "-o",
                &opts,
            ],
        )
    }

    /// Stops the server: `fast` (clean) or `immediate` (like a crash).
    pub fn stop_server(&self, mode: &str) -> Result<(), PgTempError> {
        self.run(
            "pg_ctl stop",
            &["stop", "-D", &self.data_dir(), "-w", "-t", "60", "-m", mode],
        )
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server comes back.
    pub fn restart(&self) -> Result<(), PgTempError> {
        self.stop_server("fast")?;
        self.start_server()
    }

    /// Runs SQL through `psql`-free means: callers use tokio-postgres; this creates a database.
    pub fn create_database(&self, name: &str) -> Result<(), PgTempError> {
        let createdb = self.bin.join("createdb");
        let out = self
            .command(&createdb)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(PgTempError::Step {
                step: "createdb",
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, step: &'static str, args: &[&str]) -> Result<(), PgTempError> {
        let program = if step == "initdb" {
            self.bin.join("initdb")
        } else {
            self.bin.join("pg_ctl")
        };
        let out = self
            .command(&program)
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            Err(PgTempError::Step {
                step,
                detail: format!(
                    "{}{}\n{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            })
        }
    }
}

impl Drop for PgTemp {
    fn drop(&mut self) {
        let _ = self.stop_server("immediate");
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `ROWCAST_PG_BIN`, else `/usr/lib/postgresql/<newest>/bin`, else `initdb` on `PATH`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ROWCAST_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| "no `postgres` user in /etc/passwd".to_string())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
