//! What every scenario needs: a throwaway database, the real `rowcast` binary as a child
//! process (running exactly the scenario's configuration), clients' file limits, clocks,
//! and statistics.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use rowcast::Settings as Config;
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
    // Warnings only: the binary's log goes to the terminal while measuring.
    config.log.level = "warn".into();
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
    /// The configuration it runs with: the scenario's, with `listen` set to `port`.
    pub config: Config,
    /// Its log (stderr, also shown live).
    pub log: PathBuf,
    /// The directory holding its `rowcast.toml`.
    dir: PathBuf,
}

/// The environment the binary would read configuration from: never inherited, so that the
/// scenario's `Config` is exactly what runs.
fn config_env(key: &str) -> bool {
    key.starts_with("ROWCAST_") || key == "DATABASE_URL" || key == "RUST_LOG"
}

impl Rowcast {
    /// Starts `rowcast serve` with exactly `config` (written as TOML and named by
    /// `ROWCAST_CONFIG`; only `listen` is replaced by a free port), and waits until
    /// `GET /readyz` answers 200. Panics naming the log if the process exits first or is
    /// not ready within two minutes.
    pub fn start(config: &Config) -> Rowcast {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut config = config.clone();
        config.listen = format!("127.0.0.1:{port}").parse().expect("address");
        let text = toml::to_string(&config).expect("the configuration serializes as TOML");
        // What the binary will read back is what the scenario configured: every key.
        let mut reread: Config = toml::from_str(&text).expect("the TOML reads back");
        reread.apply_defaults();
        assert_eq!(
            toml::to_string(&reread).expect("TOML"),
            text,
            "the configuration does not survive its TOML file"
        );
        let dir = std::env::temp_dir().join(format!("rowcast-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("config dir");
        let file = dir.join("rowcast.toml");
        std::fs::write(&file, &text).expect("write rowcast.toml");
        let log =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-rowcast-{port}.log"));

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
        let ignored: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| config_env(k))
            .collect();
        for k in &ignored {
            cmd.env_remove(k);
        }
        if !ignored.is_empty() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "bench: not passed to rowcast (the scenario's configuration is what runs): {}",
                    ignored.join(", ")
                )
            });
        }
        cmd.arg("serve")
            .env("ROWCAST_CONFIG", &file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start rowcast");
        let tail = tee_log(child.stderr.take().expect("piped stderr"), &log);
        let mut r = Rowcast {
            child,
            port,
            config,
            log,
            dir,
        };
        r.wait_ready(&tail);
        r
    }

    /// Polls `GET /readyz` until it answers 200.
    fn wait_ready(&mut self, tail: &Arc<Mutex<VecDeque<String>>>) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        let mut last: String;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the log reader catch the last lines.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "rowcast exited ({status}) before /readyz answered 200; its log: {}\n{}",
                    self.log.display(),
                    tail.lock()
                        .unwrap()
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            match http_status(self.port, "/readyz") {
                Ok(200) => return,
                Ok(code) => last = format!("HTTP {code}"),
                Err(e) => last = e.to_string(),
            }
            assert!(
                Instant::now() < deadline,
                "rowcast not ready after {:?} (GET /readyz: {last}); its log: {}",
                started.elapsed(),
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        status_mb(self.pid(), field)
    }

    /// CPU seconds (user + system) the process used so far.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS:`, `VmHWM:`), in MiB.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
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

/// The status code of `GET path` on 127.0.0.1:`port` (HTTP/1.1, no keep-alive).
pub fn http_status(port: u16, path: &str) -> std::io::Result<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

/// Copies the child's stderr to the bench's stderr and to `log`; keeps the last lines.
fn tee_log(stderr: ChildStderr, log: &Path) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut file = std::fs::File::create(log).expect("create the rowcast log");
    let keep = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let _ = writeln!(file, "{line}");
            let mut t = keep.lock().unwrap();
            if t.len() == 20 {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    tail
}

/// The key settings of `config`, printed with every scenario (the whole configuration is
/// what `Rowcast::start` passes).
pub fn describe(config: &Config) -> String {
    let c = config;
    format!(
        "rowcast config: capture.mode = {}, capture.batch_size = {}, capture.active_poll = {:?}, \
         capture.idle_after = {:?}, hub.session_queue = {}, hub.replay_buffer = {}, \
         hub.socketio_recovery = {}, \
         pool_size = {}, webhook.concurrency = {}, webhook.allow_cidrs = {:?}, log.level = {}",
        c.capture.mode.as_str(),
        c.capture.batch_size,
        c.capture.active_poll,
        c.capture.idle_after,
        c.hub.session_queue,
        c.hub.replay_buffer,
        c.hub.socketio_recovery,
        c.pool_size,
        c.webhook.concurrency,
        c.webhook
            .allow_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
        c.log.level,
    )
}

/// Runs that did not produce a measurement (timed out, incomplete): reported at the end,
/// and the bench exits with status 1.
static FAILED: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn record_failure(what: String) {
    FAILED.lock().unwrap().push(what);
}

/// Prints the failed runs, if any; `true` when there were some.
pub fn report_failures() -> bool {
    let failed = FAILED.lock().unwrap();
    if failed.is_empty() {
        return false;
    }
    println!(
        "\n## FAILED: {} run(s) produced no valid measurement\n",
        failed.len()
    );
    for f in failed.iter() {
        println!("- {f}");
    }
    true
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
        let _ = std::fs::remove_dir_all(&self.dir);
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
