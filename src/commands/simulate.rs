//! Commands against the simulated Checus gateway: `sandbox` serves it, `demo` runs the whole
//! daemon against it and checks the ledger against the sandbox's truth.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use checus_reconciler::cli::{DemoArgs, ExitCode, SandboxArgs};
use checus_reconciler::domain::SystemClock;
use checus_reconciler::{demo, report, sandbox};
use tokio_util::sync::CancellationToken;

use super::output::print;
use super::{Failure, Outcome, signals};

/// `sandbox`: serve on loopback until SIGTERM/SIGINT.
pub async fn sandbox(args: SandboxArgs) -> Outcome {
    let listen = args.listen;
    if !listen.ip().is_loopback() {
        return Err(Failure::usage(format!(
            "--listen {listen}: the sandbox serves loopback addresses only"
        )));
    }
    let scripts = match args.scripts {
        None => Vec::new(),
        Some(path) => {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("{}", path.display()))
                .map_err(|e| Failure::new(ExitCode::Input, e))?;
            sandbox::parse_scripts_jsonl(std::io::BufReader::new(file)).map_err(|e| {
                Failure::new(ExitCode::Input, anyhow::anyhow!("{}: {e}", path.display()))
            })?
        }
    };
    let mut options = sandbox::SandboxOptions::insecure_test(Arc::new(SystemClock));
    options.listen = listen;
    options.latency = args.latency;
    let sb = sandbox::start(options)
        .await
        .map_err(|e| Failure::new(ExitCode::Failure, e).context("starting the sandbox"))?;
    sb.script_many(scripts)?;
    let token = CancellationToken::new();
    signals::install(token.clone(), None)?;
    // The first stdout line is the readiness signal scripts wait for.
    print(format!("sandbox listening on {}\n", sb.base_url()))?;
    token.cancelled().await;
    sb.shutdown().await;
    Ok(ExitCode::Ok)
}

/// `demo`: seed refunds, run the daemon against the sandbox, print the summary; exit 7 when
/// the ledger disagrees with the sandbox's truth.
pub async fn demo(args: DemoArgs) -> Outcome {
    let token = CancellationToken::new();
    signals::install(token.clone(), None)?;
    let DemoArgs {
        dir,
        refunds,
        seed,
        timeout_secs,
        listen,
    } = args;
    let what = checus_reconciler::report::count(
        u64::try_from(refunds).unwrap_or(u64::MAX),
        "refund",
        "refunds",
    );
    print(format!(
        "demo: {what} (seed {seed}) against the simulated Checus gateway on 127.0.0.1 ...\n"
    ))?;
    let options = demo::DemoOptions {
        dir,
        refunds,
        seed,
        timeout: Duration::from_secs(timeout_secs),
        listen,
    };
    let report = demo::run(options, token).await?;
    print(report::demo_summary(&report))?;
    Ok(if report.matches_truth() {
        ExitCode::Ok
    } else {
        ExitCode::DemoMismatch
    })
}
