//! What the tests install for themselves, once per test run: the npm packages of `tests/js`
//! (`npm ci`) and the Python packages of the Helm chart check (`pip install --target`).
//!
//! Test threads share one attempt per process (a `OnceLock`); concurrently running test
//! binaries are serialized by a file lock in the target directory, and the new
//! `node_modules` appears with one rename, so nobody ever sees half an install. When an
//! install is impossible (no npm or pip, no network) every test that needs it fails with a
//! message naming what is missing and the command that installs it. Nothing is skipped.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one `npm ci` or `pip install` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The command that installs the npm test clients by hand.
pub const NPM_CI: &str = "npm ci --no-audit --no-fund";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn js_dir() -> PathBuf {
    repo().join("tests/js")
}

/// Cargo's target directory (the parent of `CARGO_TARGET_TMPDIR`, so `CARGO_TARGET_DIR`
/// is honoured).
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// An exclusive lock on a file, held until dropped (also across processes).
pub struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    pub fn acquire(path: &Path) -> Result<FileLock, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        file.lock()
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        Ok(FileLock(file))
    }
}

/// Makes sure `tests/js/node_modules` holds every dependency of `tests/js/package.json`,
/// running `npm ci --no-audit --no-fund` at most once per test run when one is missing.
/// Returns `tests/js`; panics with what is missing and how to install it when it cannot.
pub fn npm_packages() -> PathBuf {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    match DONE.get_or_init(install_npm) {
        Ok(()) => js_dir(),
        Err(msg) => panic!("{msg}"),
    }
}

/// [`npm_packages`] from async code (on a blocking thread; its panic is the caller's).
pub async fn npm_packages_async() -> PathBuf {
    tokio::task::spawn_blocking(npm_packages)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The dependencies of `tests/js/package.json`.
fn npm_dependencies() -> Result<Vec<String>, String> {
    let path = js_dir().join("package.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let deps = v["dependencies"]
        .as_object()
        .ok_or_else(|| format!("{} has no dependencies", path.display()))?;
    Ok(deps.keys().cloned().collect())
}

/// The dependencies `node_modules` (in `dir`) lacks.
fn missing_npm(dir: &Path, deps: &[String]) -> Vec<String> {
    deps.iter()
        .filter(|d| {
            !dir.join("node_modules")
                .join(d)
                .join("package.json")
                .is_file()
        })
        .cloned()
        .collect()
}

fn install_npm() -> Result<(), String> {
    let js = js_dir();
    let deps = npm_dependencies()?;
    if missing_npm(&js, &deps).is_empty() {
        return Ok(());
    }
    let _lock = FileLock::acquire(&target_dir().join("npm-ci.lock"))?;
    // Another test binary may have installed them while this one waited for the lock.
    let missing = missing_npm(&js, &deps);
    if missing.is_empty() {
        return Ok(());
    }
    let what = format!(
        "the npm packages the tests drive ({}) are not installed in tests/js/node_modules (missing: {})",
        deps.join(", "),
        missing.join(", ")
    );
    eprintln!("{what}: running `{NPM_CI}` in tests/js once for this test run");
    // Installed in a staging directory beside node_modules and renamed into place, so a
    // test (of another binary) never sees a half-written node_modules.
    let staging = js.join(format!(".install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("{what}; cannot create {}: {e}", staging.display()))?;
    let cleanup = RemoveOnDrop(staging.clone());
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(js.join(f), staging.join(f))
            .map_err(|e| format!("{what}; cannot copy tests/js/{f}: {e}"))?;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&staging);
    let how = format!("install Node.js 20 with npm, or run `(cd tests/js && {NPM_CI})` by hand");
    match run(cmd) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!(
                "{what}, and `npm` is not installed to install them: {how}"
            ));
        }
        Err(e) => return Err(format!("{what}; `{NPM_CI}` could not run ({e}): {how}")),
        Ok(out) if !out.status.success() => {
            return Err(format!(
                "{what}; `{NPM_CI}` in tests/js failed ({}; no network or no access to the npm registry?). \
                 Run `(cd tests/js && {NPM_CI})` where the registry is reachable.\n{}",
                out.status,
                tail(&out)
            ));
        }
        Ok(_) => {}
    }
    let modules = js.join("node_modules");
    if modules.exists() {
        let old = js.join(format!(".install-{}-old", std::process::id()));
        std::fs::rename(&modules, &old)
            .map_err(|e| format!("cannot move the incomplete tests/js/node_modules aside: {e}"))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(staging.join("node_modules"), &modules)
        .map_err(|e| format!("cannot move the installed packages to tests/js/node_modules: {e}"))?;
    drop(cleanup);
    let missing = missing_npm(&js, &deps);
    if !missing.is_empty() {
        return Err(format!(
            "`{NPM_CI}` finished but tests/js/node_modules still lacks {}",
            missing.join(", ")
        ));
    }
    eprintln!("installed the npm test packages in tests/js/node_modules");
    Ok(())
}

/// The Python interpreter of the chart test (`PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Where the chart test's Python packages are installed when Python lacks them.
pub fn python_packages_dir() -> PathBuf {
    target_dir().join("test-python")
}

/// `PYTHONPATH` with `dir` first.
pub fn python_path(dir: &Path) -> OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).expect("a PYTHONPATH")
}

/// Makes sure the Python script `checker` finds the packages of `requirements`
/// (`checker --check-tools` exits 2 naming a missing one), installing them with pip into
/// [`python_packages_dir`] at most once per test run. Returns the `PYTHONPATH` to run the
/// checker with; panics with what is missing and the command when that is impossible.
pub fn python_packages(checker: &Path, requirements: &Path) -> OsString {
    static DONE: OnceLock<Result<OsString, String>> = OnceLock::new();
    match DONE.get_or_init(|| install_python(checker, requirements)) {
        Ok(p) => p.clone(),
        Err(msg) => panic!("{msg}"),
    }
}

/// Runs `checker --check-tools` with `path`: `Ok(None)` when every package is there,
/// `Ok(Some(why))` when one is missing (exit 2).
fn probe(checker: &Path, path: &OsStr) -> Result<Option<String>, String> {
    let out = Command::new(python())
        .arg(checker)
        .arg("--check-tools")
        .env("PYTHONPATH", path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
        format!(
            "cannot run `{}` ({e}): the chart test needs Python 3 (set PYTHON to use another interpreter)",
            python()
        )
    })?;
    match out.status.code() {
        Some(0) => Ok(None),
        Some(2) => Ok(Some(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
        _ => Err(format!(
            "the chart check's tool probe failed ({}):\n{}",
            out.status,
            tail(&out)
        )),
    }
}

fn install_python(checker: &Path, requirements: &Path) -> Result<OsString, String> {
    let dir = python_packages_dir();
    let path = python_path(&dir);
    if probe(checker, &path)?.is_none() {
        return Ok(path);
    }
    let _lock = FileLock::acquire(&target_dir().join("test-python.lock"))?;
    let Some(why) = probe(checker, &path)? else {
        return Ok(path);
    };
    // The checker's own message, first line: "missing Python package: <name>.".
    let why = why.lines().next().unwrap_or_default().to_string();
    let py = python();
    let reqs = requirements.display();
    let command = format!("{py} -m pip install --target {} -r {reqs}", dir.display());
    eprintln!("{why} Running `{command}` once for this test run");
    let staging = target_dir().join(format!("test-python.install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let cleanup = RemoveOnDrop(staging.clone());
    let mut cmd = Command::new(&py);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .arg("--target")
    .arg(&staging)
    .arg("-r")
    .arg(requirements);
    let how = format!(
        "install them with `{py} -m pip install -r tests/helm/requirements.txt` (or `{command}`) where PyPI is reachable"
    );
    match run(cmd) {
        Err(e) => {
            return Err(format!(
                "{why} pip could not run ({e}; Debian: apt-get install python3-pip): {how}"
            ));
        }
        Ok(out) if !out.status.success() => {
            return Err(format!(
                "{why} `{command}` failed ({}; no pip, or no network?): {how}\n{}",
                out.status,
                tail(&out)
            ));
        }
        Ok(_) => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).map_err(|e| {
        format!(
            "cannot move the installed packages to {}: {e}",
            dir.display()
        )
    })?;
    drop(cleanup);
    match probe(checker, &path)? {
        None => {
            eprintln!(
                "installed the chart test's Python packages in {}",
                dir.display()
            );
            Ok(path)
        }
        Some(why) => Err(format!(
            "`{command}` finished, but the chart check still lacks a package:\n{why}"
        )),
    }
}

/// Runs `cmd` to completion (output captured, no stdin), killed after [`INSTALL_TIMEOUT`].
fn run(mut cmd: Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    // Readers on threads, so a chatty installer never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut b);
        b
    });
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("did not finish within {} s", INSTALL_TIMEOUT.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// The last lines of a command's output.
fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
