//! `resume`: ends a running daemon's halt now. The command checks there is a halt to end (a
//! daemon holds the lock, and its latest finished sweep ended halted), records the audited
//! request in `operator_actions`, and waits for the first sweep after it: the daemon, which
//! looks for new requests every second while halted, runs that sweep at once and probes
//! Checus in it (`ledger/resume.rs` says why the ledger carries the request).

use std::time::{Duration, Instant};

use checus_reconciler::cli::{ExitCode, ResumeArgs};
use checus_reconciler::config::Environment;
use checus_reconciler::daemon::Presence;
use checus_reconciler::domain::{Clock, SystemClock, format_ts};
use checus_reconciler::ledger::{Ledger, SweepRow};

use super::args::{actor, open_existing, reason};
use super::heartbeat::Heartbeat;
use super::output::{print, print_json};
use super::{Failure, Outcome};

/// How often the command looks for the sweep that answers its request: a read of the sweeps
/// after the request's, which costs nothing next to the probe it waits for.
const POLL: Duration = Duration::from_millis(50);

/// `resume`: exit 0 when querying resumed (or, with `--wait 0s`, once the request is
/// recorded), 5 when there was nothing to resume (nothing written), 8 when the probe halted
/// again or no sweep answered within `--wait`.
pub fn resume(args: ResumeArgs, env: &Environment) -> Outcome {
    let by = actor(&args.operator, env)?;
    let why = reason(&args.reason)?;
    let l = open_existing(&args.ledger, env)?;
    let heartbeat = Heartbeat::read(&l)?;
    let nothing = |why: String| {
        Failure::new(
            ExitCode::Input,
            anyhow::anyhow!("nothing to resume: {why}; nothing was recorded"),
        )
    };
    match &heartbeat.presence {
        Presence::Running => {}
        Presence::NotRunning => {
            return Err(nothing(format!(
                "no daemon is running on this ledger ({}), and a daemon starts with querying on",
                heartbeat.unlocked
            )));
        }
        // The lock cannot be tested (permissions): the sweeps still tell whether it halted.
        Presence::Unknown(e) => tracing::warn!(
            lock = %heartbeat.lock,
            error = %e,
            "cannot tell whether a daemon is running; going by the latest sweep"
        ),
    }
    let Some(halt) = heartbeat.halt() else {
        let when = heartbeat
            .last
            .as_ref()
            .and_then(|s| s.finished_at)
            .map_or_else(
                || "no sweep has finished yet".to_owned(),
                |t| {
                    format!(
                        "its latest sweep, at {}, ended with querying on",
                        format_ts(t)
                    )
                },
            );
        return Err(nothing(format!("the daemon is not halted: {when}")));
    };
    let request = l.request_resume(&by, why, SystemClock.now())?;
    let answer = wait_for_sweep_after(&l, request.after_sweep, args.wait)?;
    let resumed = answer.as_ref().map(|s| s.halt_code.is_none());
    if args.json {
        print_json(&serde_json::json!({
            "operator_action": request.action_id,
            "halted": halt,
            "resumed": resumed,
            "sweep": answer.as_ref().map(|s| s.id),
            "still_halted": answer.as_ref().and_then(|s| s.halted_reason.clone()),
        }))?;
    } else {
        print(text(&halt, request.action_id, answer.as_ref(), args.wait))?;
    }
    Ok(match resumed {
        Some(true) => ExitCode::Ok,
        // Not asked to wait: the request is recorded, which is all that was asked.
        None if args.wait.is_zero() => ExitCode::Ok,
        _ => ExitCode::NeedsHuman,
    })
}

/// The first sweep after `after` that finished, waiting up to `wait` for it.
fn wait_for_sweep_after(
    l: &Ledger,
    after: i64,
    wait: Duration,
) -> Result<Option<SweepRow>, Failure> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(sweep) = l.first_finished_sweep_after(after)? {
            return Ok(Some(sweep));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        // Polling the ledger: the daemon is another process and says nothing else.
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// What happened, in words.
fn text(halt: &str, action: i64, answer: Option<&SweepRow>, wait: Duration) -> String {
    let asked =
        format!("querying was halted ({halt}); resume requested (operator_actions {action})");
    match answer {
        Some(s) if s.halt_code.is_none() => {
            format!(
                "{asked}\nquerying resumed: the daemon probed Checus at once (sweep {})\n",
                s.id
            )
        }
        Some(s) => format!(
            "{asked}\nstill halted: the probe was refused again ({}); fix the configuration \
             (then `systemctl reload checus-reconciler`) or the clock, and resume again\n",
            s.halted_reason.as_deref().unwrap_or("halted")
        ),
        None if wait.is_zero() => format!(
            "{asked}\nnot waiting (--wait 0s): the daemon probes within about a second; \
             `checus-reconciler status` shows the outcome\n"
        ),
        None => format!(
            "{asked}\nno sweep answered within {}: is the daemon stuck? \
             (`journalctl -u checus-reconciler -e`); the request stays recorded and the daemon \
             takes it at its next sweep\n",
            checus_reconciler::config::fmt_human(wait)
        ),
    }
}
