//! Process-level harness for the reliability suites: the real binary in fresh temp dirs with a
//! scrubbed environment, a child process whose output lines are readiness signals, an
//! in-process sandbox on its own runtime (so its script state outlives daemon restarts), and
//! read-only views of the ledger file taken the way an auditor would, with plain SQL.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use checus_reconciler::domain::SystemClock;
use checus_reconciler::sandbox::{self, RefundScript, Sandbox, SandboxOptions, SandboxStats};

/// The binary under test (the debug build nextest compiled).
pub const BIN: &str = env!("CARGO_BIN_EXE_checus-reconciler");
/// The INSECURE test keys the sandbox trusts.
pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/INSECURE-test-keys");

/// A command for the binary in `dir` with an empty environment (PATH only).
pub fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// Runs the binary to completion.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    cmd(dir).args(args).output().expect("binary runs")
}

/// The exit code (panics if killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not signalled")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies the test keys into `dir` with private permissions (git does not keep modes).
pub fn keys_into(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let private = dir.join("merchant_private.b64");
    let public = dir.join("gateway_public.b64");
    std::fs::copy(format!("{KEYS}/merchant_private.b64"), &private).unwrap();
    std::fs::copy(format!("{KEYS}/gateway_public.b64"), &public).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    (private, public)
}

/// The config text for a daemon on `dir/ledger.sqlite` against `base_url`, plus `extra` TOML.
pub fn config_text(dir: &Path, base_url: &str, extra: &str) -> String {
    let ledger = format!("path = \"{}\"", dir.join("ledger.sqlite").display());
    config_text_on(dir, &ledger, base_url, extra)
}

/// The config text for a daemon whose `[ledger]` section holds `ledger` (e.g. a PostgreSQL
/// `url = "postgres://…"`), with its keys copied into `dir`, against `base_url`, plus `extra`.
pub fn config_text_on(dir: &Path, ledger: &str, base_url: &str, extra: &str) -> String {
    let (private, public) = keys_into(dir);
    format!(
        r#"[ledger]
{ledger}

[gateway]
base_url = "{base_url}"
app_id = "SANDBOX-APP"
merchant_no = "SANDBOX-MERCHANT"
request_timeout = "2s"
connect_timeout = "1s"

[keys]
merchant_private_key = "file:{private}"
gateway_public_key = "file:{public}"
{extra}"#,
        private = private.display(),
        public = public.display(),
    )
}

/// Writes `dir/<file>`: [`config_text`] with `[ledger] url = <url>` (a PostgreSQL ledger)
/// instead of the SQLite path, and returns its path.
pub fn write_pg_config(dir: &Path, file: &str, base_url: &str, url: &str, extra: &str) -> PathBuf {
    let sqlite = format!("path = \"{}\"", dir.join("ledger.sqlite").display());
    let text = config_text(dir, base_url, extra).replacen(&sqlite, &format!("url = {url:?}"), 1);
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `dir/config.toml` (see [`config_text`]) and returns its path.
pub fn write_config(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, config_text(dir, base_url, extra)).unwrap();
    path
}

/// A fast schedule for daemons under test: no grace window, sub-second backoff, a sweep
/// every second, JSON logs. `worker` is extra `[worker]` keys.
pub fn fast_schedule(worker: &str) -> String {
    format!(
        "[schedule]\ngrace = \"0s\"\nbackoff = [\"50ms\", \"100ms\", \"200ms\"]\nretry = \"100ms\"\nsteady = \"1s\"\n\n\
         [worker]\nsweep_cron = \"* * * * * *\"\n{worker}\n\n[log]\nformat = \"json\"\n"
    )
}

/// A child process whose stdout/stderr lines arrive on a channel; killed on drop.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(mut c: Command) -> Self {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The next line, or `None` if none arrives within `within` (or the process is gone).
    pub fn next_line(&mut self, within: Duration) -> Option<String> {
        match self.lines.recv_timeout(within) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(_) => None,
        }
    }

    /// Waits for a line containing `needle` (readiness), returning it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!(
                    "no line containing {needle:?}; saw (last 40):\n{}",
                    self.tail(40)
                ),
            }
        }
    }

    /// Like `wait_for`, but an already-seen line counts too.
    pub fn saw_or_wait(&mut self, needle: &str) -> String {
        match self.seen.iter().find(|l| l.contains(needle)) {
            Some(line) => line.clone(),
            None => self.wait_for(needle),
        }
    }

    /// The last `n` lines seen, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.seen.len().saturating_sub(n);
        self.seen[from..].join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGKILL, then reap, then collect whatever output was still in the pipes.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL delivered");
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the process died of SIGKILL, not of something else: {status:?}\n{}",
            self.tail(40)
        );
        self.drain();
    }

    /// Reads every line already in the pipes (the process has exited).
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
    }

    /// Waits for the exit code; panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain();
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {within:?}; saw (last 40):\n{}",
                self.tail(40)
            );
            // Waiting on a process exit: poll try_wait (there is no readiness line for it).
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The JSON log lines seen so far.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox served from this test process on its own multi-thread runtime, on the system
/// clock, so its scripts and counters survive any number of daemon restarts.
pub struct LiveSandbox {
    sandbox: Option<Sandbox>,
    rt: tokio::runtime::Runtime,
}

impl LiveSandbox {
    pub fn start(scripts: Vec<(String, RefundScript)>) -> Self {
        Self::start_with(scripts, |_| {})
    }

    pub fn start_with(
        scripts: Vec<(String, RefundScript)>,
        tweak: impl FnOnce(&mut SandboxOptions),
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = SandboxOptions::insecure_test(Arc::new(SystemClock));
        tweak(&mut options);
        let sandbox = rt.block_on(sandbox::start(options)).unwrap();
        sandbox.script_many(scripts).unwrap();
        Self {
            sandbox: Some(sandbox),
            rt,
        }
    }

    pub fn get(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("running")
    }

    pub fn base_url(&self) -> String {
        self.get().base_url()
    }

    pub fn stats(&self) -> SandboxStats {
        self.get().stats()
    }
}

impl Drop for LiveSandbox {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            self.rt.block_on(sb.shutdown());
        }
    }
}

/// Writes `refunds.csv` for `import` (amount as exact text) and returns its path.
pub fn import_csv(dir: &Path, scripts: &[(String, RefundScript)]) -> PathBuf {
    let mut csv = String::from("out_refund_no,amount,currency,out_trade_no\n");
    for (no, s) in scripts {
        csv.push_str(&format!(
            "{no},{},{},{}\n",
            s.amount,
            s.currency.as_str(),
            s.out_trade_no
        ));
    }
    let path = dir.join("refunds.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// A plain SQLite connection to the ledger, as the merchant's app or an auditor opens it.
pub fn sql(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// `PRAGMA integrity_check` (and foreign keys) on the file: `ok` or the problems.
pub fn integrity(path: &Path) -> String {
    let c = sql(path);
    let ic: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let fk: i64 = c
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    if fk == 0 {
        ic
    } else {
        format!("{ic}; {fk} foreign key violations")
    }
}

/// One refund row as an auditor compares it across snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundSnap {
    pub status: String,
    pub final_source: Option<String>,
    pub finalized_at: Option<String>,
    pub refund_finish_time: Option<String>,
    pub attempts: i64,
    pub review_flag: i64,
}

/// Every refund by number.
pub fn refunds(path: &Path) -> BTreeMap<String, RefundSnap> {
    let c = sql(path);
    let mut stmt = c
        .prepare(
            "SELECT out_refund_no, status, final_source, finalized_at, refund_finish_time, attempts,
                    review_flag FROM refunds",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            RefundSnap {
                status: r.get(1)?,
                final_source: r.get(2)?,
                finalized_at: r.get(3)?,
                refund_finish_time: r.get(4)?,
                attempts: r.get(5)?,
                review_flag: r.get(6)?,
            },
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// One attempt row, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSnap {
    pub out_refund_no: String,
    pub attempted_at: String,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub gateway_code: Option<String>,
    pub data_status: Option<String>,
    pub error: Option<String>,
}

/// Every attempt row by id.
pub fn attempts(path: &Path) -> BTreeMap<i64, AttemptSnap> {
    let c = sql(path);
    let mut stmt = c
        .prepare(
            "SELECT id, out_refund_no, attempted_at, outcome, http_status, gateway_code, data_status,
                    error FROM attempts",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            AttemptSnap {
                out_refund_no: r.get(1)?,
                attempted_at: r.get(2)?,
                outcome: r.get(3)?,
                http_status: r.get(4)?,
                gateway_code: r.get(5)?,
                data_status: r.get(6)?,
                error: r.get(7)?,
            },
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// `SELECT count(*) FROM <table> [WHERE ...]`.
pub fn count(path: &Path, from: &str) -> i64 {
    sql(path)
        .query_row(&format!("SELECT count(*) FROM {from}"), [], |r| r.get(0))
        .unwrap()
}

/// A seed from `var`, or a fresh one; printed either way so a failure can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{var}={s} is not a u64"))
        })
        .unwrap_or_else(rand::random);
    eprintln!("seed: {seed} (replay with {var}={seed})");
    seed
}

/// A number from `var`, else `default`.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s} does not parse")),
        Err(_) => default,
    }
}

/// Starts `checus-reconciler sandbox --scripts` (the real binary) in `dir` with `scripts`
/// (JSON lines), waits for its readiness line and returns it with its base URL.
pub fn sandbox_command(dir: &Path, scripts: &str) -> (Proc, String) {
    let file = dir.join("scripts.jsonl");
    std::fs::write(&file, scripts).unwrap();
    let mut c = cmd(dir);
    c.args(["sandbox", "--scripts", file.to_str().unwrap()]);
    let mut p = Proc::spawn(c);
    let line = p.wait_for("sandbox listening on ");
    let url = line.split("sandbox listening on ").nth(1).unwrap().trim();
    (p, url.to_owned())
}

/// Reads one HTTP request's head and body (by Content-Length), so a test's loopback server
/// answers only once the whole request is in.
pub fn read_http_request(s: &mut std::net::TcpStream) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + length {
                return;
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Receives `sd_notify` datagrams on `sock` until one contains `needle` (each arrives after
/// what it describes happened, so it is a readiness signal) and returns that one; every
/// datagram received is appended to `seen`. Gives up after 60 s without a datagram.
pub fn recv_notify_until(
    sock: &std::os::unix::net::UnixDatagram,
    needle: &str,
    seen: &mut Vec<String>,
) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {needle:?} ({e}); got {seen:#?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.contains(needle) {
            return msg;
        }
    }
}

/// Imports `scripts` into the ledger of `config` with the real `import` command, as an
/// operator would (the CSV from [`import_csv`]); panics unless it exits 0.
pub fn import_scripts(dir: &Path, config: &Path, scripts: &[(String, RefundScript)]) {
    let csv = import_csv(dir, scripts);
    let o = run(
        dir,
        &[
            "import",
            "--config",
            config.to_str().unwrap(),
            csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// An HTTP answer: status, the headers the tests read, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics, showing it, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }

    /// The refused field of an error body (`null` → `None`).
    pub fn field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_owned)
    }
}

/// One request with reqwest on a runtime of its own (the tests are synchronous: they wait on
/// the daemon's output lines), `headers` exactly as given, no proxy, within `timeout`.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Answer, reqwest::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()?;
        let mut req = client.request(method.parse().unwrap(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, www_authenticate, retry_after) = (
            header("content-type").unwrap_or_default(),
            header("www-authenticate"),
            header("retry-after"),
        );
        Ok(Answer {
            status: resp.status().as_u16(),
            content_type,
            www_authenticate,
            retry_after,
            body: resp.text().await?,
        })
    })
}

/// One POST of `body` as `content_type`; `sign` becomes the `sign` header.
pub fn post(
    url: &str,
    body: Vec<u8>,
    sign: Option<&str>,
    content_type: &str,
) -> Result<Answer, reqwest::Error> {
    let mut headers = vec![("content-type", content_type)];
    if let Some(s) = sign {
        headers.push(("sign", s));
    }
    http("POST", url, &headers, Some(body), Duration::from_secs(15))
}

/// A notification about `script`'s refund as the sandbox gateway signs it (`amount`
/// overrides the script's), finished and sent now.
pub fn signed_notification(
    no: &str,
    script: &RefundScript,
    status: checus_reconciler::domain::FinalStatus,
    amount: Option<rust_decimal::Decimal>,
) -> checus_reconciler::sandbox::notify::SignedNotification {
    use checus_reconciler::sandbox::notify::{notification_body, sign_notification};
    let now = chrono::Utc::now();
    let body = notification_body(no, script, status, amount, "SANDBOX-MERCHANT", now, now);
    sign_notification(
        &checus_reconciler::sandbox::test_keys::insecure_gateway_private(),
        body,
    )
}

/// The `[http]` section on a free loopback port, with the default notify path.
pub fn http_on_loopback() -> String {
    "\n[http]\nlisten = \"127.0.0.1:0\"\n".to_owned()
}

/// The address in the daemon's latest "http listening" line.
pub fn listening_addr(daemon: &mut Proc) -> std::net::SocketAddr {
    let line = daemon.wait_for("http listening");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["address"].as_str().unwrap().parse().unwrap()
}

/// Polls `f` every 20 ms until it gives a value, for a condition nothing signals (a row count,
/// a server coming back); panics naming `what` after `within`.
pub fn poll_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {within:?} waiting for {what}"
        );
        // Polling a condition with a deadline: nothing announces it.
        std::thread::sleep(Duration::from_millis(20));
    }
}
