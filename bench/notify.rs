//! Figures 8a and 8b (issue 13): Checus refund notifications received by the daemon. 8a: how
//! many verified notifications per second it records and acknowledges, from 32 keep-alive
//! connections; 8b: the ack latency (request sent to last byte of the ack) at an open-loop
//! 200 notifications per second. The notifications are signed with the gateway's INSECURE test
//! key before the clock starts, so the client's signing is not in the figures; the client and
//! the daemon share the machine's cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use checus_reconciler::domain::FinalStatus;
use checus_reconciler::sandbox::RefundScript;
use checus_reconciler::sandbox::notify::{
    SignedNotification, notification_body, sign_notification,
};
use checus_reconciler::sandbox::test_keys;
use chrono::{TimeDelta, Utc};

use super::procs::{SandboxProc, Timed};
use super::{Env, Figure, Listening, ledgergen, median, start_listening};

/// The acknowledgement, byte for byte.
const ACK: &[u8] = br#"{"code":"SUCCESS","msg":"Success"}"#;

/// Connections the throughput client keeps open (the listener allows 64).
const CONNECTIONS: usize = 32;

/// A daemon serving notifications on a ledger of `n` pending refunds that are not due (a
/// day away), so the worker stays idle and only the notification path works.
struct NotifyStage {
    ledger: PathBuf,
    url: String,
    daemon: Timed,
    _sandbox: SandboxProc,
}

fn stage(env: &Env, name: &str, n: usize) -> Result<NotifyStage> {
    let dir = env.work.path().join(name);
    std::fs::create_dir_all(&dir)?;
    let ledger = dir.join("ledger.sqlite");
    let now = Utc::now();
    ledgergen::generate(
        &ledger,
        &ledgergen::Spec {
            finals: 0,
            pending_due: vec![now + TimeDelta::days(1); n],
            now,
        },
        &mut |_| {},
    )?;
    let Listening {
        daemon,
        addr,
        sandbox,
    } = start_listening(env, &dir, &ledger, Duration::from_secs(60))?;
    Ok(NotifyStage {
        ledger,
        url: format!("http://{addr}/checus/refund-notify"),
        daemon,
        _sandbox: sandbox,
    })
}

/// One signed notification per pending refund `0..n`, each finalizing it.
fn signed(n: usize) -> Vec<SignedNotification> {
    let key = test_keys::insecure_gateway_private();
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let no = ledgergen::pending_no(i);
            let mut script = RefundScript::usd(&no, vec![]);
            script.refund_trade_no = format!("T{no}");
            script.amount = ledgergen::AMOUNT.parse().expect("a decimal");
            let body = notification_body(
                &no,
                &script,
                FinalStatus::Success,
                None,
                "SANDBOX-MERCHANT",
                now,
                now,
            );
            sign_notification(&key, body)
        })
        .collect()
}

/// POSTs one notification; the seconds to the last byte of an exact ack.
async fn post(client: &reqwest::Client, url: &str, n: &SignedNotification) -> Result<f64> {
    let t = Instant::now();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("sign", &n.sign)
        .body(n.body.clone())
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.bytes().await?;
    if status != 200 || body.as_ref() != ACK {
        bail!(
            "not acknowledged: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Every refund of the stage was finalized by exactly one notification.
fn check_ledger(ledger: &Path, n: usize) -> Result<()> {
    let c = super::read_only(ledger)?;
    let finalized: i64 = c.query_row(
        "SELECT count(*) FROM notifications WHERE effect = 'finalized'",
        [],
        |r| r.get(0),
    )?;
    anyhow::ensure!(finalized as usize == n, "{finalized} of {n} finalized");
    Ok(())
}

/// What [`throughput`] measured.
pub struct Throughput {
    pub n: usize,
    pub rate: f64,
    pub daemon_cpu: f64,
}

/// 8a: `n` notifications from [`CONNECTIONS`] connections, as fast as they are acknowledged.
pub fn throughput(env: &Env, n: usize) -> Result<Throughput> {
    let stage = stage(env, "notify-tput", n)?;
    let all = Arc::new(signed(n));
    let rt = runtime()?;
    let cpu_before = stage.daemon.cpu_now()?;
    let t = Instant::now();
    rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let (all, next, url, client) = (
                Arc::clone(&all),
                Arc::clone(&next),
                stage.url.clone(),
                client()?,
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(n) = all.get(i) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    post(&client, &url, n).await?;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let elapsed = t.elapsed().as_secs_f64();
    let daemon_cpu = stage.daemon.cpu_now()? - cpu_before;
    stage.daemon.stop()?;
    check_ledger(&stage.ledger, n)?;
    Ok(Throughput {
        n,
        rate: n as f64 / elapsed,
        daemon_cpu,
    })
}

/// What [`latency`] measured, in seconds.
pub struct AckLatency {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// 8b: an open loop of `rate` notifications per second for `window_s` seconds (each sent on
/// its tick whether or not earlier ones were answered).
pub fn latency(env: &Env, rate: u32, window_s: u64) -> Result<AckLatency> {
    let n = (u64::from(rate) * window_s) as usize;
    let stage = stage(env, "notify-latency", n)?;
    let all = Arc::new(signed(n));
    let rt = runtime()?;
    let mut times = rt.block_on(async {
        let client = client()?;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            tick.tick().await;
            let (all, url, client) = (Arc::clone(&all), stage.url.clone(), client.clone());
            tasks.push(tokio::spawn(
                async move { post(&client, &url, &all[i]).await },
            ));
        }
        let mut times = Vec::with_capacity(n);
        for t in tasks {
            times.push(t.await??);
        }
        Ok::<_, anyhow::Error>(times)
    })?;
    stage.daemon.stop()?;
    check_ledger(&stage.ledger, n)?;
    times.sort_by(f64::total_cmp);
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let max = *times.last().context("no samples")?;
    Ok(AckLatency {
        n,
        p50: median(&mut times),
        p99,
        max,
    })
}

/// Both figures, appended to the table and the notes.
pub fn figures(
    env: &Env,
    quick: bool,
    verify_s: f64,
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) -> Result<()> {
    eprintln!("== 8. notifications: verified and acknowledged per second; ack p99 at 200/s");
    let tput = throughput(env, if quick { 5_000 } else { 20_000 })?;
    figures.push(Figure {
        id: "8a",
        what: format!(
            "Verified notifications recorded and acknowledged per second, {} from {CONNECTIONS} keep-alive connections (client on the same 2 cores)",
            tput.n
        ),
        target: "≥ 2,000/s".into(),
        measured: format!("{:.0}/s", tput.rate),
        met: tput.rate >= 2000.0,
    });
    notes.push(format!(
        "Run 8a: daemon CPU {:.2} s for {} notifications ({:.3} ms each: RSA verify, parse, one grouped INSERT through the contract SQL, HTTP).",
        tput.daemon_cpu,
        tput.n,
        tput.daemon_cpu / tput.n as f64 * 1e3
    ));
    // 8c: the same daemon CPU per notification against its floor: one verify, plus the
    // ledger's durable share of one notification (the contract INSERT, the trigger's work, the
    // commit and its fsync, divided by the batch) measured alone in batches of the size the 32
    // connections give the inbox's writer.
    let dir = env.work.path().join("notify-ledger-share");
    std::fs::create_dir_all(&dir)?;
    let share = crate::record::run(
        &dir,
        0,
        tput.n,
        CONNECTIONS,
        crate::record::Kind::Notifications,
    )?;
    let per = tput.daemon_cpu / tput.n as f64;
    let floor = verify_s + share.cpu_per_refund;
    figures.push(Figure {
        id: "8c",
        what: "Daemon CPU per verified notification ÷ (one verify + the ledger's durable share of one notification)".into(),
        target: "≤ 1.5×".into(),
        measured: format!(
            "{:.2}× ({:.3} ms ÷ ({:.3} + {:.3}) ms)",
            per / floor,
            per * 1e3,
            verify_s * 1e3,
            share.cpu_per_refund * 1e3
        ),
        met: per / floor <= 1.5,
    });
    notes.push(format!(
        "Run 8c: the ledger's share measured alone (`bench record --notifications --refunds {} --batch {CONNECTIONS} --history 0`): {} notifications in {} commits, {:.3} ms CPU each.",
        tput.n,
        share.refunds,
        share.commits,
        share.cpu_per_refund * 1e3
    ));
    let window = if quick { 10 } else { 30 };
    let lat = latency(env, 200, window)?;
    figures.push(Figure {
        id: "8b",
        what: format!(
            "Notification ack latency p99 (sent to last byte) at an open-loop 200/s, {} notifications over {window} s",
            lat.n
        ),
        target: "≤ 20 ms".into(),
        measured: format!(
            "{:.1} ms (p50 {:.1} ms, max {:.1} ms)",
            lat.p99 * 1e3,
            lat.p50 * 1e3,
            lat.max * 1e3
        ),
        met: lat.p99 <= 0.020,
    });
    Ok(())
}
