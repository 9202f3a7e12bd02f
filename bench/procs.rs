//! The processes a benchmark drives: the sandbox (its own process, so its signing is not
//! counted), the daemon under `/usr/bin/time`, and readings from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The simulated gateway, started as `checus-reconciler sandbox`.
pub struct SandboxProc {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl SandboxProc {
    /// Starts the sandbox with `scripts` and `latency`, and waits for its readiness line.
    pub fn start(bin: &Path, scripts: &Path, latency: &str, log: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("sandbox")
            .arg("--scripts")
            .arg(scripts)
            .arg("--latency")
            .arg(latency)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting the sandbox")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("sandbox listening on ") else {
            let _ = child.kill();
            bail!("sandbox did not start: {line:?} (see {})", log.display());
        };
        Ok(Self {
            url: url.to_owned(),
            child,
        })
    }
}

impl SandboxProc {
    /// CPU seconds the sandbox used so far (all threads).
    pub fn cpu_now(&self) -> Result<f64> {
        process_cpu(self.child.id())
    }
}

/// CPU seconds process `pid` used so far (all threads, user + system), from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

impl Drop for SandboxProc {
    fn drop(&mut self) {
        signal(self.child.id(), "TERM");
        let _ = self.child.wait();
    }
}

/// What `/usr/bin/time` measured for a whole process.
#[derive(Debug, Clone, Copy)]
pub struct TimeStats {
    /// Wall seconds.
    pub wall: f64,
    /// User + system CPU seconds.
    pub cpu: f64,
    /// Peak resident set, KiB.
    pub max_rss_kb: u64,
}

/// A command run under `/usr/bin/time`, its stderr in a log file.
pub struct Timed {
    time: Child,
    /// The measured process (the child of `/usr/bin/time`).
    pub pid: u32,
    /// Its stderr.
    pub log: PathBuf,
    time_out: PathBuf,
}

impl Timed {
    /// Starts `program args` under `/usr/bin/time`.
    pub fn start(program: &Path, args: &[&str], dir: &Path, name: &str) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let time_out = dir.join(format!("{name}.time"));
        let time = Command::new("/usr/bin/time")
            .arg("-o")
            .arg(&time_out)
            .arg("-f")
            .arg("%e %U %S %M")
            .arg(program)
            .args(args)
            .stdout(std::fs::File::create(dir.join(format!("{name}.out")))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("/usr/bin/time (apt-get install time)")?;
        let children = format!("/proc/{0}/task/{0}/children", time.id());
        let started = Instant::now();
        let pid = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                break pid.parse()?;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("{name} did not start");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        Ok(Self {
            time,
            pid,
            log,
            time_out,
        })
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.time.try_wait()? {
                bail!(
                    "exited ({status}) before logging {needle:?}: {}",
                    tail(&text)
                );
            }
            if started.elapsed() > timeout {
                bail!("no {needle:?} within {timeout:?}: {}", tail(&text));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds used so far (all threads), from `/proc/PID/stat`.
    pub fn cpu_now(&self) -> Result<f64> {
        process_cpu(self.pid)
    }

    /// Resident set now, KiB.
    pub fn rss_kb(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
    }

    /// Sends SIGTERM (if still running) and returns what `/usr/bin/time` measured.
    pub fn stop(self) -> Result<TimeStats> {
        signal(self.pid, "TERM");
        self.finish()
    }

    /// Waits for the process to exit on its own and returns what `/usr/bin/time` measured.
    pub fn finish(mut self) -> Result<TimeStats> {
        let status = self.time.wait()?;
        let text = std::fs::read_to_string(&self.time_out)?;
        let last = text.lines().last().unwrap_or_default();
        let f: Vec<f64> = last
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() != 4 {
            bail!(
                "{} exited {status}: {text} {}",
                self.log.display(),
                tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
            );
        }
        Ok(TimeStats {
            wall: f[0],
            cpu: f[1] + f[2],
            max_rss_kb: f[3] as u64,
        })
    }
}

impl Drop for Timed {
    /// A scenario that fails part-way must not leave its daemon running.
    fn drop(&mut self) {
        if matches!(self.time.try_wait(), Ok(None)) {
            signal(self.pid, "TERM");
            let _ = self.time.wait();
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// `kill -SIG pid` (the crate forbids `unsafe`, so no direct libc call).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time of the calling thread in seconds, nanosecond resolution (`/proc/thread-self/schedstat`).
pub fn thread_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ns as f64 / 1e9
}

/// The daemon's own counters over its life, from its `daemon stopped` log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonTotals {
    pub sweeps: u64,
    pub queried: u64,
    pub finalized: u64,
}

/// Reads the `daemon stopped` line of a daemon's text log.
pub fn daemon_totals(log: &Path) -> Result<DaemonTotals> {
    let text = std::fs::read_to_string(log)?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("daemon stopped"))
        .with_context(|| format!("no \"daemon stopped\" line in {}", log.display()))?;
    let field = |name: &str| -> Result<u64> {
        let key = format!(" {name}=");
        let at = line
            .find(&key)
            .with_context(|| format!("no {name}= in {line:?}"))?;
        let value: String = line[at + key.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        value
            .parse()
            .with_context(|| format!("{name}= in {line:?}"))
    };
    Ok(DaemonTotals {
        sweeps: field("sweeps")?,
        queried: field("queried")?,
        finalized: field("finalized")?,
    })
}
