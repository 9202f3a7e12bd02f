//! `webhooks`: the outgoing webhook events (the ledger's outbox) in the list style of `list`
//! and `audit`, and `webhooks redeliver`, audited like the other operator actions.

use checus_reconciler::cli::{
    ExitCode, RedeliverArgs, WebhookStateArg, WebhooksAction, WebhooksArgs, WebhooksListArgs,
};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, SystemClock, format_ts};
use checus_reconciler::ledger::{WebhookFilter, WebhookState};
use checus_reconciler::report::{self, Extent, Page};

use super::args::{actor, open_existing, open_for_reading, reason, refund_no};
use super::output::{print, print_json, warn_unreadable};
use super::{Failure, Outcome};

/// `webhooks [redeliver]`.
pub fn webhooks(args: WebhooksArgs, env: &Environment) -> Outcome {
    match args.action {
        Some(WebhooksAction::Redeliver(a)) => redeliver(a, env),
        None => list(args.list, env),
    }
}

/// The latest events matching the filters, oldest first.
fn list(args: WebhooksListArgs, env: &Environment) -> Outcome {
    let filter = WebhookFilter {
        state: args.state.map(|s| match s {
            WebhookStateArg::Pending => WebhookState::Pending,
            WebhookStateArg::Delivered => WebhookState::Delivered,
            WebhookStateArg::Dead => WebhookState::Dead,
        }),
        refund: args.refund.as_deref().map(refund_no).transpose()?,
        limit: args.limit,
    };
    let l = open_for_reading(&args.ledger, env)?;
    let read = l.webhook_events(&filter)?;
    let extent = Extent::new(read.rows.len(), read.unreadable.len(), args.limit, || {
        l.webhook_events_total(&filter)
    })?;
    if args.json {
        print_json(&Page {
            extent,
            rows: &read.rows,
        })?;
    } else {
        print(report::webhooks_table(&read.rows, &extent))?;
    }
    Ok(warn_unreadable(&read.unreadable))
}

/// Puts delivered or dead events back to pending (audited, all or nothing).
fn redeliver(args: RedeliverArgs, env: &Environment) -> Outcome {
    let by = actor(&args.operator, env)?;
    let why = reason(&args.reason)?;
    if let Some(bad) = args.event_ids.iter().find(|id| {
        !id.starts_with("evt_")
            || id.len() > 64
            || id.chars().any(|c| !c.is_ascii_alphanumeric() && c != '_')
    }) {
        return Err(Failure::new(
            ExitCode::Input,
            anyhow::anyhow!(
                "{} is not a webhook event id (evt_ and letters or digits, as `webhooks` lists them)",
                report::escape(bad)
            ),
        ));
    }
    let l = open_existing(&args.ledger, env)?;
    let now = SystemClock.now();
    l.redeliver_webhooks(&args.event_ids, &by, why, now)?;
    if args.json {
        print_json(&serde_json::json!({
            "event_ids": args.event_ids,
            "action": "redeliver_webhook",
            "by": by,
            "at": format_ts(now),
        }))?;
    } else {
        let mut text = String::new();
        for id in &args.event_ids {
            text.push_str(&format!("{id}: pending again, due now\n"));
        }
        text.push_str(&format!(
            "{} redelivered by {by} (recorded in operator_actions); the running daemon sends {} \
             within a second, in order with the refund's other events\n",
            report::count(args.event_ids.len() as u64, "event", "events"),
            if args.event_ids.len() == 1 {
                "it"
            } else {
                "them"
            }
        ));
        print(text)?;
    }
    Ok(ExitCode::Ok)
}
