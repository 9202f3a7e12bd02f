//! The benchmark harness behind `bench/run.sh`: measures every figure of BENCHMARKS.md in one
//! run, each as a ratio against a reference measured in the same run, prints the table and
//! rewrites the results block of BENCHMARKS.md. Not a test: nothing here asserts.
//!
//! `bench run` runs everything; `bench gen` only generates a ledger (N rows, K due); `bench
//! record` measures the ledger's share of a reconciled refund alone (`record.rs`); `bench
//! pg-claim` and `bench pg-nodes` measure the PostgreSQL ledger (`pg.rs`, `bench/pg.sh`).

mod ledgergen;
mod notify;
mod pg;
mod procs;
mod record;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use checus_reconciler::domain::{Timestamp, parse_ts};
use checus_reconciler::gateway::{GatewayKey, MerchantKey};
use checus_reconciler::ledger::SqliteLedger;
use checus_reconciler::sandbox::test_keys;
use chrono::{TimeDelta, Utc};
use clap::{Parser, Subcommand};
use rusqlite::{Connection, OpenFlags};

use procs::{SandboxProc, Timed, thread_cpu};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every benchmark, print the table and update BENCHMARKS.md.
    Run {
        /// Smaller sizes (1M-row ledger instead of 10M, fewer refunds): for trying changes.
        #[arg(long)]
        quick: bool,
        /// The Python with requests and cryptography for the baseline.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// The results file to update (between its bench markers).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Where generated ledgers are cached between runs.
        #[arg(long, default_value = "target/bench-data")]
        data: PathBuf,
        /// Only these scenarios (1-8), e.g. `--only 1,2`; the results file is left alone.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Keep the run's working folder (ledgers, logs, configs) and print its path.
        #[arg(long)]
        keep: bool,
    },
    /// Generate a ledger: FINALS final rows of history plus DUE pending rows due now.
    Gen {
        /// The new ledger file.
        #[arg(long)]
        ledger: PathBuf,
        /// Final rows.
        #[arg(long)]
        finals: u64,
        /// Pending rows, due one hour ago.
        #[arg(long, default_value_t = 0)]
        due: usize,
        /// Write the matching sandbox scripts (each answers success) here.
        #[arg(long)]
        scripts: Option<PathBuf>,
    },
    /// The ledger's CPU per reconciled refund alone: record a verified final answer for each
    /// of REFUNDS pending rows through the worker's group-commit call, BATCH per transaction.
    Record {
        /// Pending refunds to record.
        #[arg(long, default_value_t = 20_000)]
        refunds: usize,
        /// Attempts per transaction (the daemon's writer gathers about its concurrency).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Final rows of history in the ledger beside them.
        #[arg(long, default_value_t = 100_000)]
        history: u64,
        /// Keep the ledger and print its folder.
        #[arg(long)]
        keep: bool,
        /// Record verified notifications through the daemon's inbox instead of query answers.
        #[arg(long)]
        notifications: bool,
    },
    /// One sign's CPU when signs are spaced apart, as a daemon spaces them while it waits for
    /// the gateway: signs after sleeping GAP each (0: back to back). Against the reference's
    /// tight loop, this shows what a sign costs once the CPU has slept in between.
    SignGaps {
        /// Gaps between signs, microseconds, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [0u64, 100, 1500, 20000])]
        gaps_us: Vec<u64>,
        /// Signs timed per gap.
        #[arg(long, default_value_t = 300)]
        count: u32,
    },
    /// PostgreSQL: the worker's claim of 1,000 due refunds at each ledger size (1 % of the
    /// refunds pending and due), each size on a fresh database; the ratio largest ÷ smallest
    /// and the claim's plan at the largest.
    PgClaim {
        /// The server: a database the harness may connect to as a role that creates databases.
        #[arg(long, env = pg::URL_ENV, hide_env_values = true, default_value = pg::DEFAULT_URL)]
        url: String,
        /// Ledger sizes (refunds), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [100_000u64, 10_000_000])]
        sizes: Vec<u64>,
        /// Timed claims per size (after the warm-up).
        #[arg(long, default_value_t = 21)]
        reps: usize,
    },
    /// PostgreSQL: refunds/s of one daemon, then of two on one ledger (node names a and b),
    /// against the sandbox at LATENCY, CONCURRENCY each; the ratio two ÷ one.
    PgNodes {
        /// The server (as for pg-claim).
        #[arg(long, env = pg::URL_ENV, hide_env_values = true, default_value = pg::DEFAULT_URL)]
        url: String,
        /// Pending refunds per run, each scripted `success`.
        #[arg(long, default_value_t = 24_000)]
        refunds: usize,
        /// The sandbox's answer latency.
        #[arg(long, default_value = "50ms")]
        latency: String,
        /// `worker.concurrency` of each daemon.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// `worker.batch_size` of each daemon (default: the product's).
        #[arg(long)]
        batch_size: Option<usize>,
        /// `worker.sweep_cron` of each daemon (default: the product's), e.g. "* * * * * *".
        #[arg(long)]
        sweep_cron: Option<String>,
        /// Keep the working folder (configs, daemon and sandbox logs) and print its path.
        #[arg(long)]
        keep: bool,
    },
}

/// Everything the harness needs to find.
struct Env {
    bin: PathBuf,
    repo: PathBuf,
    work: tempfile::TempDir,
    data: PathBuf,
    python: PathBuf,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Gen {
            ledger,
            finals,
            due,
            scripts,
        } => {
            let now = Utc::now();
            let spec = ledgergen::Spec {
                finals,
                pending_due: vec![now - TimeDelta::hours(1); due],
                now,
            };
            ledgergen::generate(&ledger, &spec, &mut |n| eprintln!("{n} final rows"))?;
            if let Some(s) = scripts {
                std::fs::write(s, ledgergen::success_scripts(due))?;
            }
            Ok(())
        }
        Cmd::Record {
            refunds,
            batch,
            history,
            keep,
            notifications,
        } => {
            let dir = tempfile::Builder::new()
                .prefix("checus-record-")
                .tempdir()?;
            let kind = if notifications {
                record::Kind::Notifications
            } else {
                record::Kind::Attempts
            };
            let cost = record::run(dir.path(), history, refunds, batch, kind)?;
            if keep {
                eprintln!("ledger kept in {}", dir.keep().display());
            }
            // Notifications are not claimed: only the attempts' line names a claim.
            let claim = if notifications {
                String::new()
            } else {
                format!(
                    "; the claim that leased them: {:.4} ms each",
                    cost.claim_per_refund * 1e3
                )
            };
            println!(
                "{} refunds in {} commits of {batch}: {:.4} ms CPU per refund ({:.4} ms wall{claim}), {}",
                cost.refunds,
                cost.commits,
                cost.cpu_per_refund * 1e3,
                cost.wall_per_refund * 1e3,
                machine(),
            );
            Ok(())
        }
        Cmd::SignGaps { gaps_us, count } => sign_gaps(&gaps_us, count),
        Cmd::PgClaim { url, sizes, reps } => pg::claim(&url, &sizes, reps),
        Cmd::PgNodes {
            url,
            refunds,
            latency,
            concurrency,
            batch_size,
            sweep_cron,
            keep,
        } => {
            let bin = release_bin()?;
            let work = tempfile::Builder::new()
                .prefix("checus-pgnodes-")
                .tempdir()?;
            let workers = pg::Workers {
                latency,
                concurrency,
                batch_size,
                sweep_cron,
            };
            let result = pg::nodes(&bin, work.path(), &url, refunds, &workers);
            if keep {
                eprintln!("working folder kept: {}", work.keep().display());
            }
            result
        }
        Cmd::Run {
            quick,
            python,
            out,
            data,
            keep,
            only,
        } => {
            let bin = release_bin()?;
            std::fs::create_dir_all(&data)?;
            let env = Env {
                bin,
                repo: std::env::current_dir()?,
                work: tempfile::Builder::new().prefix("checus-bench-").tempdir()?,
                data,
                python,
            };
            write_keys(env.work.path())?;
            let result = run_all(&env, quick, &out, &only);
            if keep {
                eprintln!("working folder kept: {}", env.work.keep().display());
            }
            result
        }
    }
}

/// The release binary beside the harness (target/release/examples/bench ->
/// target/release/checus-reconciler).
fn release_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("exe path")?
        .join("checus-reconciler");
    anyhow::ensure!(bin.exists(), "build the binary first: {}", bin.display());
    Ok(bin)
}

/// The INSECURE test keys as files the daemon accepts (a private key must be mode 600), in
/// `work/keys`.
fn write_keys(work: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = work.join("keys");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in [
        (
            "merchant_private.pem",
            test_keys::INSECURE_MERCHANT_PRIVATE_PEM,
        ),
        ("gateway_public.pem", test_keys::INSECURE_GATEWAY_PUBLIC_PEM),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// One line of the results table.
struct Figure {
    id: &'static str,
    what: String,
    target: String,
    measured: String,
    met: bool,
}

fn run_all(env: &Env, quick: bool, out: &Path, only: &[String]) -> Result<()> {
    let want = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    let sizes = if quick {
        Sizes {
            cpu_refunds: 4_000,
            tput_refunds: 4_000,
            baseline_refunds: 150,
            latency_refunds: 1_000,
            latency_window_s: 10,
            big_ledger: 1_000_000,
            idle_ledger: 1_000_000,
            idle_window_s: 20,
            scrape_window_s: 30,
        }
    } else {
        Sizes {
            cpu_refunds: 20_000,
            tput_refunds: 12_000,
            baseline_refunds: 400,
            latency_refunds: 3_000,
            latency_window_s: 30,
            big_ledger: 10_000_000,
            idle_ledger: 1_000_000,
            idle_window_s: 60,
            scrape_window_s: 150,
        }
    };
    let mut figures = Vec::new();
    let mut notes = Vec::new();

    eprintln!("== reference: RSA-2048 sign and verify, this thread's CPU");
    let (sign_s, verify_s) = crypto_reference(5, 500)?;
    let floor = sign_s + verify_s;
    notes.push(format!(
        "Reference (same run, median of 5 blocks of 500 signs and 2,500 verifies): one RSA-2048 PKCS#1 v1.5 SHA-256 sign = {:.3} ms CPU, one verify = {:.3} ms CPU, floor per refund = {:.3} ms.",
        sign_s * 1e3,
        verify_s * 1e3,
        floor * 1e3
    ));

    if want("1") {
        eprintln!("== 1. CPU per refund at 0 ms gateway latency");
        // Three runs, the median reported: one run is 7 to 9 s on a shared machine.
        let mut runs = Vec::new();
        for i in 1..=3 {
            runs.push(daemon_run(
                env,
                &format!("cpu-0ms-{i}"),
                "0ms",
                sizes.cpu_refunds,
                32,
            )?);
        }
        let per_refund = |r: &DaemonRun| r.time.cpu / r.refunds as f64;
        runs.sort_by(|a, b| per_refund(a).total_cmp(&per_refund(b)));
        let zero = &runs[1];
        let per = per_refund(zero);
        figures.push(Figure {
            id: "1",
            what: format!(
                "Daemon CPU per reconciled refund ÷ (sign + verify), 0 ms latency, {} refunds (median of 3 runs)",
                zero.refunds
            ),
            target: "≤ 1.25×".into(),
            measured: format!(
                "{:.2}× ({:.3} ms ÷ {:.3} ms)",
                per / floor,
                per * 1e3,
                floor * 1e3
            ),
            met: per / floor <= 1.25,
        });
        notes.push(format!(
            "Run 1 (the median of three runs; all three: {}): {} refunds in {:.2} s of attempts ({:.0} queries/s), daemon CPU {:.2} s (user+sys over its whole {:.1} s life), peak RSS {:.1} MB; the daemon's own counters: {} queried, {} finalized in {} sweeps.",
            runs.iter()
                .map(|r| format!("{:.3} ms", per_refund(r) * 1e3))
                .collect::<Vec<_>>()
                .join(", "),
            zero.refunds,
            zero.span_s,
            zero.rate(),
            zero.time.cpu,
            zero.time.wall,
            zero.time.max_rss_kb as f64 / 1024.0,
            zero.totals.queried,
            zero.totals.finalized,
            zero.totals.sweeps
        ));
    }

    let mut fifty_run: Option<DaemonRun> = None;
    if want("2") || want("1b") || want("6") {
        eprintln!("== 2 and 1b. throughput and CPU per refund at 50 ms latency, concurrency 32");
        let fifty = daemon_run(env, "tput-50ms", "50ms", sizes.tput_refunds, 32)?;
        let per = fifty.time.cpu / fifty.refunds as f64;
        figures.push(Figure {
            id: "1b",
            what: format!(
                "Daemon CPU per reconciled refund ÷ (sign + verify), 50 ms latency, concurrency 32, {} refunds (whole life)",
                fifty.refunds
            ),
            target: "≤ 1.40×".into(),
            measured: format!(
                "{:.2}× ({:.3} ms ÷ {:.3} ms)",
                per / floor,
                per * 1e3,
                floor * 1e3
            ),
            met: per / floor <= 1.40,
        });
        let ideal = 32.0 / 0.05;
        figures.push(Figure {
            id: "2",
            what: format!(
                "Throughput ÷ ideal 640/s, 50 ms latency, concurrency 32, {} refunds",
                fifty.refunds
            ),
            target: "≥ 90 %".into(),
            measured: format!(
                "{:.1} % ({:.0} queries/s)",
                fifty.rate() / ideal * 100.0,
                fifty.rate()
            ),
            met: fifty.rate() / ideal >= 0.90,
        });
        notes.push(format!(
        "Run 2: {} refunds in {:.2} s of attempts, daemon CPU {:.2} s ({:.3} ms per refund), peak RSS {:.1} MB; the daemon's own counters: {} queried, {} finalized in {} sweeps.",
        fifty.refunds,
        fifty.span_s,
        fifty.time.cpu,
        fifty.time.cpu / fifty.refunds as f64 * 1e3,
        fifty.time.max_rss_kb as f64 / 1024.0,
        fifty.totals.queried,
        fifty.totals.finalized,
        fifty.totals.sweeps
    ));
        fifty_run = Some(fifty);
    }

    if want("3") {
        eprintln!("== 3. claim cost vs ledger size; status on the big ledger");
        let small = cached_ledger(env, 100_000, 1_000)?;
        let big = cached_ledger(env, sizes.big_ledger, 1_000)?;
        let claim_small = claim_time(&small)?;
        let claim_big = claim_time(&big)?;
        figures.push(Figure {
            id: "3a",
            what: format!(
                "Claim 1,000 due: {} rows ÷ 100,000 rows (median of 21)",
                thousands(sizes.big_ledger)
            ),
            target: "≤ 2×".into(),
            measured: format!(
                "{:.2}× ({:.2} ms ÷ {:.2} ms)",
                claim_big / claim_small,
                claim_big * 1e3,
                claim_small * 1e3
            ),
            met: claim_big / claim_small <= 2.0,
        });
        let status = status_time(env, &big)?;
        figures.push(Figure {
            id: "3b",
            what: format!(
                "`checus-reconciler status` on {} rows (whole process, median of 3, warm cache)",
                thousands(sizes.big_ledger)
            ),
            target: "< 1 s".into(),
            measured: format!("{:.3} s", status),
            met: status < 1.0,
        });
    }

    if want("4") {
        eprintln!(
            "== 4. idle with {} final rows",
            thousands(sizes.idle_ledger)
        );
        let idle = idle_run(env, sizes.idle_ledger, sizes.idle_window_s, None)?;
        figures.push(Figure {
            id: "4a",
            what: format!(
                "Idle CPU, {} final rows, nothing due, default 30 s cron ({} s window)",
                thousands(sizes.idle_ledger),
                sizes.idle_window_s
            ),
            target: "< 0.5 % of a core".into(),
            measured: format!("{:.3} %", idle.cpu_pct),
            met: idle.cpu_pct < 0.5,
        });
        figures.push(Figure {
            id: "4b",
            what: "Idle peak RSS (VmHWM over the whole process life, /usr/bin/time)".into(),
            target: "< 32 MB".into(),
            measured: format!("{:.1} MB", idle.peak_rss_kb as f64 / 1024.0),
            met: idle.peak_rss_kb < 32 * 1024,
        });

        notes.push(format!(
            "Run 4: idle CPU {:.3} s over {} s; RSS sampled every second peaked at {:.1} MB.",
            idle.cpu_s,
            sizes.idle_window_s,
            idle.sampled_rss_kb as f64 / 1024.0
        ));
    }

    if want("5") {
        eprintln!("== 5. latency from due to query");
        let lat = latency_run(env, sizes.latency_refunds, sizes.latency_window_s)?;
        figures.push(Figure {
            id: "5",
            what: format!(
                "Due → query sent, p99 ({} refunds falling due over {} s, 50 ms latency)",
                sizes.latency_refunds, sizes.latency_window_s
            ),
            target: "≤ 1 s".into(),
            measured: format!(
                "{:.0} ms (p50 {:.0} ms, max {:.0} ms)",
                lat.p99 * 1e3,
                lat.p50 * 1e3,
                lat.max * 1e3
            ),
            met: lat.p99 <= 1.0,
        });

        notes.push(format!(
        "Run 5: {} refunds; due → query p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms.",
        lat.count,
        lat.p50 * 1e3,
        lat.p90 * 1e3,
        lat.p99 * 1e3,
        lat.max * 1e3
    ));
    }

    if let (true, Some(fifty)) = (want("6"), &fifty_run) {
        eprintln!("== 6. the Python baseline at 50 ms latency");
        let py = baseline_run(env, sizes.baseline_refunds)?;
        figures.push(Figure {
            id: "6a",
            what: "Throughput ÷ Python baseline, 50 ms latency".into(),
            target: "≥ 10×".into(),
            measured: format!(
                "{:.1}× ({:.0}/s ÷ {:.1}/s)",
                fifty.rate() / py.rate,
                fifty.rate(),
                py.rate
            ),
            met: fifty.rate() / py.rate >= 10.0,
        });
        let ours = fifty.time.cpu / fifty.refunds as f64;
        figures.push(Figure {
            id: "6b",
            what: "CPU per refund ÷ Python baseline's, 50 ms latency".into(),
            target: "≤ 0.5×".into(),
            measured: format!(
                "{:.2}× ({:.3} ms ÷ {:.3} ms)",
                ours / py.cpu_per_refund,
                ours * 1e3,
                py.cpu_per_refund * 1e3
            ),
            met: ours / py.cpu_per_refund <= 0.5,
        });
        notes.push(format!(
        "Baseline: {} refunds, {:.1} queries/s, {:.3} ms CPU per refund in its loop ({:.2} s for the whole process, interpreter start included).",
        py.refunds,
        py.rate,
        py.cpu_per_refund * 1e3,
        py.total_cpu
    ));
    }

    if want("7") {
        metrics_figures(env, &sizes, &mut figures, &mut notes)?;
    }

    if want("8") {
        notify::figures(env, quick, verify_s, &mut figures, &mut notes)?;
    }

    let block = render(&figures, &notes, quick)?;
    println!("{block}");
    if only.is_empty() {
        update_results(out, &block)?;
        eprintln!("results written to {}", out.display());
    }
    Ok(())
}

/// Figures 7a and 7b: a `/metrics` scrape on the big ledger, and idle CPU with a scrape
/// every 15 s (issue 12).
fn metrics_figures(
    env: &Env,
    sizes: &Sizes,
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> Result<()> {
    eprintln!("== 7. /metrics: a scrape on the big ledger; idle with a scrape every 15 s");
    let big = cached_ledger(env, sizes.big_ledger, 1_000)?;
    let scrape = scrape_run(env, &big)?;
    figures.push(Figure {
        id: "7a",
        what: format!(
            "`GET /metrics` on {} rows: whole request (connect to last byte), ledger gauges read uncached (median of 11)",
            thousands(sizes.big_ledger)
        ),
        target: "≤ 20 ms".into(),
        measured: format!(
            "{:.1} ms (max {:.1} ms)",
            scrape.uncached * 1e3,
            scrape.uncached_max * 1e3
        ),
        met: scrape.uncached <= 0.020,
    });
    notes.push(format!(
        "Run 7a: {} bytes per page; a scrape within the {} s gauge cache takes {:.2} ms (median of 11).",
        scrape.bytes,
        checus_reconciler::daemon::GAUGE_CACHE.as_secs(),
        scrape.cached * 1e3
    ));
    let every = Duration::from_secs(15);
    let idle = idle_run(env, sizes.idle_ledger, sizes.scrape_window_s, Some(every))?;
    figures.push(Figure {
        id: "7b",
        what: format!(
            "Idle CPU with a `/metrics` scrape every 15 s, {} final rows, default 30 s cron ({} s window)",
            thousands(sizes.idle_ledger),
            sizes.scrape_window_s
        ),
        target: "< 0.5 % of a core".into(),
        measured: format!("{:.3} %", idle.cpu_pct),
        met: idle.cpu_pct < 0.5,
    });
    notes.push(format!(
        "Run 7b: idle CPU {:.3} s over {} s with {} scrapes.",
        idle.cpu_s, sizes.scrape_window_s, idle.scrapes
    ));
    Ok(())
}

/// What [`scrape_run`] measured.
struct Scrape {
    uncached: f64,
    uncached_max: f64,
    cached: f64,
    bytes: usize,
}

/// A free loopback address for the daemon's listener.
fn free_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A daemon on `ledger` with its HTTP listener on a free loopback address, against an
/// unscripted sandbox at 0 ms (every refund unknown to it), once it says it is ready.
struct Listening {
    daemon: Timed,
    addr: std::net::SocketAddr,
    sandbox: SandboxProc,
}

/// Starts [`Listening`] in `dir`; gives the daemon `ready_within` to be ready.
fn start_listening(
    env: &Env,
    dir: &Path,
    ledger: &Path,
    ready_within: Duration,
) -> Result<Listening> {
    let scripts = dir.join("scripts.jsonl");
    std::fs::write(&scripts, "")?;
    let sandbox = SandboxProc::start(&env.bin, &scripts, "0ms", &dir.join("sandbox.log"))?;
    let addr = free_addr()?;
    let config = dir.join("config.toml");
    let text =
        config_text(env, ledger, &sandbox.url, 8) + &format!("\n[http]\nlisten = \"{addr}\"\n");
    std::fs::write(&config, text)?;
    let mut daemon = Timed::start(
        &env.bin,
        &["run", "-c", config.to_str().context("path")?],
        dir,
        "daemon",
    )?;
    daemon.wait_log("daemon ready", ready_within)?;
    Ok(Listening {
        daemon,
        addr,
        sandbox,
    })
}

/// One `GET /metrics` as Prometheus makes it (a new connection), timed from connect to the
/// last byte; returns the seconds and the page's size.
fn scrape(addr: std::net::SocketAddr) -> Result<(f64, usize)> {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut page = Vec::new();
    s.read_to_end(&mut page)?;
    let elapsed = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        page.starts_with(b"HTTP/1.1 200"),
        "scrape failed: {}",
        String::from_utf8_lossy(&page[..page.len().min(200)])
    );
    Ok((elapsed, page.len()))
}

/// The daemon on a copy of `source` (its due refunds answered "unknown" by an unscripted
/// sandbox, so the first sweep has something to do), scraped once its first sweep is done:
/// 11 scrapes spaced past the gauge cache, then 11 back to back.
fn scrape_run(env: &Env, source: &Path) -> Result<Scrape> {
    let dir = env.work.path().join("scrape");
    std::fs::create_dir_all(&dir)?;
    let ledger = dir.join("ledger.sqlite");
    std::fs::copy(source, &ledger)?;
    let Listening {
        mut daemon,
        addr,
        sandbox,
    } = start_listening(env, &dir, &ledger, Duration::from_secs(120))?;
    daemon.wait_log("sweep finished", Duration::from_secs(120))?;
    let (_, bytes) = scrape(addr)?;
    let mut uncached = Vec::new();
    for _ in 0..11 {
        std::thread::sleep(checus_reconciler::daemon::GAUGE_CACHE + Duration::from_millis(100));
        uncached.push(scrape(addr)?.0);
    }
    let mut cached = Vec::new();
    for _ in 0..11 {
        cached.push(scrape(addr)?.0);
    }
    daemon.stop()?;
    drop(sandbox);
    let uncached_max = uncached.iter().copied().fold(0.0, f64::max);
    Ok(Scrape {
        uncached: median(&mut uncached),
        uncached_max,
        cached: median(&mut cached),
        bytes,
    })
}

struct Sizes {
    cpu_refunds: usize,
    tput_refunds: usize,
    baseline_refunds: usize,
    latency_refunds: usize,
    latency_window_s: u64,
    big_ledger: u64,
    idle_ledger: u64,
    idle_window_s: u64,
    /// The idle window with a `/metrics` scrape every 15 s (figure 7b).
    scrape_window_s: u64,
}

/// The `/refundQuery` body the reference and `sign-gaps` sign, as the daemon builds one.
const REFUND_QUERY_BODY: &[u8] = br#"{"version":"1.4","keyVersion":"1","requestTime":"2026-11-25T07:01:23.737+00:00","appId":"SANDBOX-APP","merchantNo":"SANDBOX-MERCHANT","data":{"outRefundNo":"P000000001"}}"#;

/// CPU seconds of one sign and one verify, measured on this thread: the median over
/// `blocks` blocks of `per_block` signs (and 5 × as many verifies), so one block slowed by a
/// neighbour on the shared machine does not move the floor.
fn crypto_reference(blocks: u32, per_block: u32) -> Result<(f64, f64)> {
    let merchant = MerchantKey::from_text(test_keys::INSECURE_MERCHANT_PRIVATE_PEM)?;
    let gateway_signer = MerchantKey::from_text(test_keys::INSECURE_GATEWAY_PRIVATE_PEM)?;
    let gateway = GatewayKey::from_text(test_keys::INSECURE_GATEWAY_PUBLIC_PEM)?;
    let request = REFUND_QUERY_BODY;
    let answer = br#"{"code":"APPLY_SUCCESS","msg":"Success.","data":{"outRefundNo":"P000000001","refundTradeNo":"TP000000001","refundAmount":12.50,"refundCurrency":"USD","status":"REFUND_SUCCESS","refundFinishTime":"2026-11-25T07:01:23.737+00:00"}}"#;
    let answer_sign = gateway_signer.sign_b64(answer);
    // Warm up caches and the CPU's frequency.
    for _ in 0..100 {
        std::hint::black_box(merchant.sign_b64(request));
    }
    let mut signs = Vec::new();
    let mut verifies = Vec::new();
    for _ in 0..blocks {
        let t0 = thread_cpu();
        for _ in 0..per_block {
            std::hint::black_box(merchant.sign_b64(std::hint::black_box(request)));
        }
        signs.push((thread_cpu() - t0) / f64::from(per_block));
        let t0 = thread_cpu();
        for _ in 0..per_block * 5 {
            gateway
                .verify_b64(std::hint::black_box(answer), &answer_sign)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        verifies.push((thread_cpu() - t0) / f64::from(per_block * 5));
    }
    Ok((median(&mut signs), median(&mut verifies)))
}

/// `bench sign-gaps`: one `/refundQuery` sign's CPU after each gap: the thread's CPU over
/// COUNT rounds of (sleep GAP, sign) less that of COUNT rounds of (sleep GAP) alone, so the
/// sleep's own system time is not counted; the median of 5 such pairs.
fn sign_gaps(gaps_us: &[u64], count: u32) -> Result<()> {
    let merchant = MerchantKey::from_text(test_keys::INSECURE_MERCHANT_PRIVATE_PEM)?;
    let request = REFUND_QUERY_BODY;
    for _ in 0..100 {
        std::hint::black_box(merchant.sign_b64(request));
    }
    println!("{}", machine());
    let rounds = |gap: u64, sign: bool| {
        let t0 = thread_cpu();
        for _ in 0..count {
            if gap > 0 {
                std::thread::sleep(Duration::from_micros(gap));
            }
            if sign {
                std::hint::black_box(merchant.sign_b64(std::hint::black_box(request)));
            }
        }
        thread_cpu() - t0
    };
    for &gap in gaps_us {
        let mut per_sign: Vec<f64> = (0..5)
            .map(|_| (rounds(gap, true) - rounds(gap, false)) / f64::from(count))
            .collect();
        println!(
            "gap {gap:>6} us: one sign = {:.4} ms CPU (median of 5 × {count})",
            median(&mut per_sign) * 1e3
        );
    }
    Ok(())
}

/// A daemon run that reconciles `n` due refunds (each answered `success` at once).
struct DaemonRun {
    refunds: usize,
    time: procs::TimeStats,
    span_s: f64,
    /// The daemon's own counters, checked against the ledger.
    totals: procs::DaemonTotals,
}

impl DaemonRun {
    fn rate(&self) -> f64 {
        (self.refunds as f64 - 1.0) / self.span_s
    }
}

fn config_text(env: &Env, ledger: &Path, url: &str, concurrency: usize) -> String {
    let keys = env.work.path().join("keys");
    format!(
        r#"[ledger]
path = "{ledger}"

[gateway]
base_url = "{url}"
app_id = "SANDBOX-APP"
merchant_no = "SANDBOX-MERCHANT"

[keys]
merchant_private_key = "file:{keys}/merchant_private.pem"
gateway_public_key = "file:{keys}/gateway_public.pem"

[worker]
concurrency = {concurrency}
# Raised for the benchmark (the default is 5/s, a production courtesy to Checus).
rate_per_second = 100000.0
# Large batches: a sweep ends by waiting for its slowest in-flight query (one gateway round
# trip at reduced concurrency), so fewer, larger sweeps keep the 32 slots full.
batch_size = 5000

[log]
format = "text"
level = "info"
"#,
        ledger = ledger.display(),
        keys = keys.display(),
    )
}

/// A scenario's working folder: a fresh ledger of pending refunds due at `due`, each scripted
/// to answer `success`, and the sandbox serving them after `latency`.
struct Stage {
    dir: PathBuf,
    ledger: PathBuf,
    sandbox: SandboxProc,
}

fn stage(
    env: &Env,
    name: &str,
    now: Timestamp,
    due: Vec<Timestamp>,
    latency: &str,
) -> Result<Stage> {
    let dir = env.work.path().join(name);
    std::fs::create_dir_all(&dir)?;
    let ledger = dir.join("ledger.sqlite");
    let n = due.len();
    ledgergen::generate(
        &ledger,
        &ledgergen::Spec {
            finals: 0,
            pending_due: due,
            now,
        },
        &mut |_| {},
    )?;
    let scripts = dir.join("scripts.jsonl");
    std::fs::write(&scripts, ledgergen::success_scripts(n))?;
    let sandbox = SandboxProc::start(&env.bin, &scripts, latency, &dir.join("sandbox.log"))?;
    Ok(Stage {
        dir,
        ledger,
        sandbox,
    })
}

/// Starts the daemon on a stage with `concurrency` and waits until it is ready.
fn start_daemon(env: &Env, stage: &Stage, concurrency: usize) -> Result<Timed> {
    let config = stage.dir.join("config.toml");
    std::fs::write(
        &config,
        config_text(env, &stage.ledger, &stage.sandbox.url, concurrency),
    )?;
    let mut daemon = Timed::start(
        &env.bin,
        &["run", "-c", config.to_str().context("path")?],
        &stage.dir,
        "daemon",
    )?;
    daemon.wait_log("daemon ready", Duration::from_secs(30))?;
    Ok(daemon)
}

/// Generates a ledger of `n` pending refunds due now, serves scripts answering each with
/// `success` after `latency`, runs the daemon until all are final, and stops it.
fn daemon_run(
    env: &Env,
    name: &str,
    latency: &str,
    n: usize,
    concurrency: usize,
) -> Result<DaemonRun> {
    let now = Utc::now();
    let stage = stage(
        env,
        name,
        now,
        vec![now - TimeDelta::seconds(1); n],
        latency,
    )?;
    let daemon = start_daemon(env, &stage, concurrency)?;
    let Stage {
        ledger, sandbox, ..
    } = stage;
    wait_all_final(&ledger, Duration::from_secs(900))?;
    let log = daemon.log.clone();
    let time = daemon.stop()?;
    drop(sandbox);
    let (first, last, count) = attempt_span(&ledger)?;
    anyhow::ensure!(count as usize == n, "{count} attempts for {n} refunds");
    // The daemon's own counters must tell the same story as the ledger: one query and one
    // final outcome per refund, none counted twice.
    let totals = procs::daemon_totals(&log)?;
    anyhow::ensure!(
        totals.queried as usize == n && totals.finalized as usize == n,
        "the daemon counted {} queries and {} finalized for {n} refunds ({})",
        totals.queried,
        totals.finalized,
        log.display()
    );
    Ok(DaemonRun {
        refunds: n,
        time,
        span_s: (last - first).as_seconds_f64(),
        totals,
    })
}

fn read_only(ledger: &Path) -> Result<Connection> {
    Ok(Connection::open_with_flags(
        ledger,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

fn wait_all_final(ledger: &Path, timeout: Duration) -> Result<()> {
    // An O(1) probe, a few times a second: the harness shares the two cores with the daemon
    // and the sandbox, and a count over the pending index every 50 ms took ~6 % of the
    // machine during run 1 (perf), time the daemon then spent waiting to be scheduled.
    let conn = read_only(ledger)?;
    let started = Instant::now();
    loop {
        let any_pending: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM refunds WHERE status = 'REFUND_PENDING')",
            [],
            |r| r.get(0),
        )?;
        if !any_pending {
            return Ok(());
        }
        if started.elapsed() > timeout {
            let pending: i64 = conn.query_row(
                "SELECT count(*) FROM refunds WHERE status = 'REFUND_PENDING'",
                [],
                |r| r.get(0),
            )?;
            bail!("{pending} refunds still pending after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn attempt_span(ledger: &Path) -> Result<(Timestamp, Timestamp, i64)> {
    let conn = read_only(ledger)?;
    let (first, last, count): (String, String, i64) = conn.query_row(
        "SELECT min(attempted_at), max(attempted_at), count(*) FROM attempts",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok((parse_ts(&first)?, parse_ts(&last)?, count))
}

/// A ledger of `finals` final rows and `due` pending rows due an hour before it was made,
/// cached under the data folder (read-only benchmarks leave it unchanged).
fn cached_ledger(env: &Env, finals: u64, due: usize) -> Result<PathBuf> {
    // The schema version is in the name: a ledger cached by an older build is not reused
    // (the daemon would refuse it, or migrate it inside a measurement).
    let path = env.data.join(format!(
        "ledger-v{}-{finals}-final-{due}-due.sqlite",
        checus_reconciler::ledger::SCHEMA_VERSION
    ));
    if path.exists() {
        return Ok(path);
    }
    let partial = path.with_extension("partial");
    for p in [
        &partial,
        &partial.with_extension("partial-wal"),
        &partial.with_extension("partial-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
    let now = Utc::now();
    eprintln!(
        "generating {} ({finals} final rows, {due} due)",
        path.display()
    );
    let started = Instant::now();
    ledgergen::generate(
        &partial,
        &ledgergen::Spec {
            finals,
            pending_due: vec![now - TimeDelta::hours(1); due],
            now,
        },
        &mut |n| {
            if n % 1_000_000 == 0 {
                eprintln!("  {n} rows, {:.0} s", started.elapsed().as_secs_f64());
            }
        },
    )?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Median wall time of the worker's claim (`Ledger::due(now, 1000)`), warm.
fn claim_time(ledger: &Path) -> Result<f64> {
    let l = SqliteLedger::open_existing(ledger)?;
    let now = Utc::now();
    for _ in 0..3 {
        anyhow::ensure!(l.due(now, 1_000)?.rows.len() == 1_000, "expected 1000 due");
    }
    let mut samples = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        std::hint::black_box(l.due(now, 1_000)?);
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&mut samples))
}

/// Median wall time of the `status` command as an operator runs it, after one warm-up.
fn status_time(env: &Env, ledger: &Path) -> Result<f64> {
    let run = || -> Result<f64> {
        let t = Instant::now();
        let out = std::process::Command::new(&env.bin)
            .arg("status")
            .arg("--ledger")
            .arg(ledger)
            .output()?;
        let elapsed = t.elapsed().as_secs_f64();
        // Exit 8 is `status` working as documented: it printed the report and found something
        // for a human (a generated ledger has never been swept). Only other codes are failures.
        anyhow::ensure!(
            matches!(out.status.code(), Some(0 | 8)),
            "status failed: {out:?}"
        );
        Ok(elapsed)
    };
    run()?;
    let mut samples = vec![run()?, run()?, run()?];
    Ok(median(&mut samples))
}

struct Idle {
    /// `/metrics` scrapes made during the window.
    scrapes: u32,
    cpu_s: f64,
    cpu_pct: f64,
    peak_rss_kb: u64,
    sampled_rss_kb: u64,
}

/// Idle CPU over `window_s`; with `scrape_every`, the listener is on and `/metrics` is
/// scraped that often, as Prometheus would.
fn idle_run(env: &Env, finals: u64, window_s: u64, scrape_every: Option<Duration>) -> Result<Idle> {
    let source = cached_ledger(env, finals, 0)?;
    let name = if scrape_every.is_some() {
        "idle-scraped"
    } else {
        "idle"
    };
    let dir = env.work.path().join(name);
    std::fs::create_dir_all(&dir)?;
    // A copy: the daemon records its sweeps, and the cached file stays as generated.
    let ledger = dir.join("ledger.sqlite");
    std::fs::copy(&source, &ledger)?;
    // Pending work, but none due for 30 days: the daemon must sleep, not poll.
    {
        let conn = Connection::open(&ledger)?;
        let due = Utc::now() + TimeDelta::days(30);
        for i in 0..100 {
            conn.execute(
                "INSERT INTO refunds (out_refund_no, amount, currency, created_at, next_query_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    ledgergen::pending_no(i),
                    ledgergen::AMOUNT,
                    ledgergen::CURRENCY,
                    checus_reconciler::domain::format_ts(due - ledgergen::DUE_AFTER_CREATED),
                    checus_reconciler::domain::format_ts(due),
                ],
            )?;
        }
    }
    let scripts = dir.join("scripts.jsonl");
    std::fs::write(&scripts, "")?;
    let sandbox = SandboxProc::start(&env.bin, &scripts, "0ms", &dir.join("sandbox.log"))?;
    let config = dir.join("config.toml");
    let mut text = config_text(env, &ledger, &sandbox.url, 8);
    text = text.replace("rate_per_second = 100000.0", "rate_per_second = 5.0");
    let addr = free_addr()?;
    if scrape_every.is_some() {
        text.push_str(&format!("\n[http]\nlisten = \"{addr}\"\n"));
    }
    std::fs::write(&config, text)?;
    let mut daemon = Timed::start(
        &env.bin,
        &["run", "-c", config.to_str().context("path")?],
        &dir,
        "daemon",
    )?;
    daemon.wait_log("daemon ready", Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(3));
    let c0 = daemon.cpu_now()?;
    let t0 = Instant::now();
    let mut sampled = 0;
    let mut scrapes = 0;
    let mut next_scrape = t0;
    while t0.elapsed() < Duration::from_secs(window_s) {
        sampled = sampled.max(daemon.rss_kb()?);
        if let Some(every) = scrape_every
            && Instant::now() >= next_scrape
        {
            scrape(addr)?;
            scrapes += 1;
            next_scrape += every;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu_s = daemon.cpu_now()? - c0;
    let wall = t0.elapsed().as_secs_f64();
    let time = daemon.stop()?;
    drop(sandbox);
    Ok(Idle {
        scrapes,
        cpu_s,
        cpu_pct: cpu_s / wall * 100.0,
        peak_rss_kb: time.max_rss_kb,
        sampled_rss_kb: sampled,
    })
}

struct Latency {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// `n` refunds fall due evenly over `window_s` seconds, starting 3 s after the daemon is
/// ready; measures from each due time to its query's `attempted_at`.
fn latency_run(env: &Env, n: usize, window_s: u64) -> Result<Latency> {
    let now = Utc::now();
    let start = now + TimeDelta::seconds(5);
    let step = window_s as f64 / n as f64;
    let due: Vec<Timestamp> = (0..n)
        .map(|i| start + TimeDelta::microseconds((i as f64 * step * 1e6) as i64))
        .collect();
    let stage = stage(env, "latency", now, due, "50ms")?;
    let daemon = start_daemon(env, &stage, 32)?;
    let Stage {
        ledger, sandbox, ..
    } = stage;
    if Utc::now() > start {
        bail!("the daemon took longer than 5 s to start; the run would measure start-up");
    }
    wait_all_final(&ledger, Duration::from_secs(window_s + 120))?;
    daemon.stop()?;
    drop(sandbox);
    let conn = read_only(&ledger)?;
    let mut stmt = conn.prepare(
        "SELECT r.created_at, min(a.attempted_at) FROM refunds r
           JOIN attempts a ON a.out_refund_no = r.out_refund_no
          GROUP BY r.out_refund_no",
    )?;
    let mut lat = Vec::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (created, attempted) = row?;
        let due = parse_ts(&created)? + ledgergen::DUE_AFTER_CREATED;
        lat.push((parse_ts(&attempted)? - due).as_seconds_f64());
    }
    anyhow::ensure!(lat.len() == n, "{} of {n} refunds queried", lat.len());
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Ok(Latency {
        count: n,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: lat[lat.len() - 1],
    })
}

struct Baseline {
    refunds: usize,
    rate: f64,
    cpu_per_refund: f64,
    total_cpu: f64,
}

fn baseline_run(env: &Env, n: usize) -> Result<Baseline> {
    let now = Utc::now();
    let Stage {
        dir,
        ledger,
        sandbox,
    } = stage(
        env,
        "baseline",
        now,
        vec![now - TimeDelta::seconds(1); n],
        "50ms",
    )?;
    let keys = env.work.path().join("keys");
    let script = env.repo.join("bench/baseline.py");
    let args = [
        script.to_str().context("path")?.to_owned(),
        "--ledger".into(),
        ledger.to_str().context("path")?.to_owned(),
        "--base-url".into(),
        sandbox.url.clone(),
        "--merchant-key".into(),
        keys.join("merchant_private.pem").display().to_string(),
        "--gateway-key".into(),
        keys.join("gateway_public.pem").display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let py = Timed::start(&env.python, &args, &dir, "baseline")?;
    let time = py.finish()?;
    drop(sandbox);
    let out = std::fs::read_to_string(dir.join("baseline.out"))?;
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or("{}"))
        .with_context(|| format!("baseline output: {out}"))?;
    let loop_cpu = summary["loop_cpu_s"].as_f64().context("loop_cpu_s")?;
    let finalized = summary["finalized"].as_u64().context("finalized")?;
    anyhow::ensure!(
        finalized as usize == n,
        "baseline finalized {finalized} of {n}"
    );
    let (first, last, count) = attempt_span(&ledger)?;
    anyhow::ensure!(count as usize == n, "{count} baseline attempts for {n}");
    Ok(Baseline {
        refunds: n,
        rate: (n as f64 - 1.0) / (last - first).as_seconds_f64(),
        cpu_per_refund: loop_cpu / n as f64,
        total_cpu: time.cpu,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The CPU model, as /proc/cpuinfo names it: what BENCHMARKS.md keeps one result per.
fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu_model();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    format!(
        "{cores} × {model}, {:.0} GiB RAM, Linux {}, {}, shared with other work (hence ratios)",
        mem_kb as f64 / 1024.0 / 1024.0,
        cmd("uname", &["-r"]),
        cmd("rustc", &["--version"]),
    )
}

fn render(figures: &[Figure], notes: &[String], quick: bool) -> Result<String> {
    let mut s = String::new();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    writeln!(
        s,
        "Last run: {} UTC, commit {commit}{}, `bench/run.sh{}`",
        Utc::now().format("%Y-%m-%d %H:%M"),
        if quick { " (QUICK sizes)" } else { "" },
        if quick { " --quick" } else { "" }
    )?;
    writeln!(s, "Machine: {}", machine())?;
    writeln!(s)?;
    writeln!(s, "| # | Figure | Target | Measured | Met |")?;
    writeln!(s, "|---|---|---|---|---|")?;
    for f in figures {
        writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            f.id,
            f.what,
            f.target,
            f.measured,
            if f.met { "yes" } else { "**no**" }
        )?;
    }
    writeln!(s)?;
    for n in notes {
        writeln!(s, "- {n}")?;
    }
    Ok(s)
}

const BEGIN: &str = "<!-- bench:results:begin -->";
const END: &str = "<!-- bench:results:end -->";

/// Rewrites this machine kind's section of the results block and keeps every other kind's,
/// so BENCHMARKS.md shows the last result of each CPU it was run on, side by side.
fn update_results(path: &Path, block: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| format!("{BEGIN}\n{END}\n"));
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} … {END} block", path.display());
    };
    let inside = &text[b + BEGIN.len()..e];
    let ours = format!("<!-- machine: {} -->", cpu_model());
    let mut sections: Vec<(String, String)> = Vec::new();
    for part in inside.split("<!-- machine: ").skip(1) {
        let Some((model, body)) = part.split_once(" -->") else {
            continue;
        };
        sections.push((format!("<!-- machine: {model} -->"), body.to_owned()));
    }
    match sections.iter_mut().find(|(m, _)| *m == ours) {
        Some(section) => section.1 = format!("\n{block}"),
        None => sections.push((ours, format!("\n{block}"))),
    }
    let mut updated = format!("{}{BEGIN}\n", &text[..b]);
    for (marker, body) in sections {
        updated.push_str(&marker);
        updated.push_str(body.trim_end());
        updated.push_str("\n\n");
    }
    updated.push_str(&text[e..]);
    std::fs::write(path, updated)?;
    Ok(())
}
