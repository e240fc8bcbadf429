//! What every scenario needs: a throwaway database, the real `rowcast` binary as a child
//! process, clients' file limits, clocks, and statistics.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rowcast::Settings as Config;
use rowcast::api::auth::Authenticator;
use rowcast::config::JwtConfig;
use rowcast::pgtemp::PgTemp;

pub const SECRET: &str = "bench-secret-0123456789abcdef";

/// A database with the helpdesk schema and `tickets` rows, optionally migrated.
pub async fn database(
    pg: &PgTemp,
    tickets: i64,
    migrate: bool,
) -> (tokio_postgres::Client, Config) {
    let url = pg.url("postgres");
    let client = connect(&url).await;
    rowcast::demo::load_helpdesk(&client, true)
        .await
        .expect("schema");
    client
        .execute(
            "INSERT INTO tickets (subject, requester_id) SELECT 'ticket ' || g, 3 FROM generate_series(1, $1::bigint) g",
            &[&tickets],
        )
        .await
        .expect("tickets");
    client
        .batch_execute("VACUUM ANALYZE")
        .await
        .expect("vacuum");
    let mut config = Config::default();
    config.apply_defaults();
    config.database_url = Some(url);
    config.jwt = JwtConfig {
        secret: Some(SECRET.into()),
        ..JwtConfig::default()
    };
    if migrate {
        migrate_now(&config).await;
    }
    (client, config)
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// `rowcast migrate` for `config` (installs the capture triggers).
pub async fn migrate_now(config: &Config) {
    let (mut c, conn) = tokio_postgres::connect(
        config.database_url.as_deref().expect("database url"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(conn);
    rowcast::migrate::migrate(&mut c, &config.tables, &config.capture)
        .await
        .expect("migrate");
}

/// An agent's token (may join `tickets`).
pub fn token(config: &Config) -> String {
    Authenticator::from_config(&config.jwt)
        .expect("jwt config")
        .issue("1", "agent", 3600)
        .expect("token")
}

/// The real binary, serving on a free port; killed on drop.
pub struct Rowcast {
    pub child: Child,
    pub port: u16,
}

impl Rowcast {
    pub fn start(config: &Config, extra_env: &[(&str, String)]) -> Rowcast {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        // `BENCH_WRAP="valgrind --tool=massif"` runs rowcast under a tool.
        let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut cmd = match wrap.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(wrap).arg(env!("CARGO_BIN_EXE_rowcast"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_rowcast")),
        };
        cmd.arg("serve")
            .env("DATABASE_URL", config.database_url.as_deref().expect("url"))
            .env("ROWCAST_JWT_SECRET", SECRET)
            .env("ROWCAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWCAST_CAPTURE_MODE", config.capture.mode.as_str())
            .env("ROWCAST_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rowcast");
        let r = Rowcast { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rowcast did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resident set size in MiB.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// The highest RSS the process has had (`VmHWM`).
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// CPU seconds (user + system) the process used so far.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }
}

/// `perf record` on a process while alive (`BENCH_PERF=<output file>`); stopped
/// with SIGINT on drop so perf writes its data.
pub struct Perf(Option<Child>);

impl Perf {
    pub fn attach(pid: u32) -> Perf {
        let Some(out) = std::env::var_os("BENCH_PERF") else {
            return Perf(None);
        };
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run perf (BENCH_PERF is set)");
        std::thread::sleep(Duration::from_millis(300));
        Perf(Some(child))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

impl Drop for Rowcast {
    fn drop(&mut self) {
        if std::env::var_os("BENCH_WRAP").is_some() {
            // Let the tool write its output: SIGTERM (graceful shutdown), then wait.
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at `) `.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after `) `.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// CPU seconds used by this (the bench) process.
pub fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Wall-clock time in milliseconds since the Unix epoch: the clock node's
/// `performance.timeOrigin + performance.now()` also reads.
pub fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `uptime`'s 1-minute load average, printed with every table (other work skews numbers).
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// The machine line: cores, RAM, kernel, PostgreSQL version.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB RAM", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let pg = rowcast::pgtemp::find_bin_dir()
        .and_then(|b| {
            Command::new(b.join("postgres"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("machine: {cores} cores, {mem}, Linux {kernel}, {pg}")
}
