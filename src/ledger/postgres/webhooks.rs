//! The webhook outbox on PostgreSQL (`webhook_events`, written by schema.postgres.sql's
//! triggers): what the delivery task reads and records, `webhooks` lists, `webhooks redeliver`
//! resets (audited), and the dead count. The same rules as the SQLite engine's `webhooks.rs`:
//! only the earliest undelivered event of each refund is due, so a refund's events go out in
//! the order they were written.

use postgres::Row;
use postgres::types::ToSql;

use super::{PgLedger, ms};
use crate::domain::{Timestamp, format_ts};
use crate::ledger::error::LedgerError;
use crate::ledger::types::{Readout, UnreadableRow, limit_arg, to_u64};
use crate::ledger::{
    DeliveryOutcome, DeliveryResult, DueWebhook, WebhookEventRow, WebhookFilter, WebhookState,
};

/// The columns [`read_row`] reads, in its order.
const ROW_COLUMNS: &str = "id, event_id, type, out_refund_no, queued_at, payload::text, state, \
                           attempts, next_attempt_at, last_error, delivered_at";

/// The body every attempt of one event sends: `{"id","type","created_at","data"}`, compact,
/// built from the stored event so it is the same bytes each time.
fn body(event_id: &str, kind: &str, queued_at: Timestamp, payload: &serde_json::Value) -> String {
    let s = |v: &str| serde_json::Value::String(v.to_owned()).to_string();
    format!(
        r#"{{"id":{},"type":{},"created_at":{},"data":{}}}"#,
        s(event_id),
        s(kind),
        s(&format_ts(queued_at)),
        payload
    )
}

/// One row of [`ROW_COLUMNS`]; a value that does not read is an [`UnreadableRow`].
fn read_row(r: &Row) -> Result<WebhookEventRow, UnreadableRow> {
    let id: i64 = r.try_get(0).unwrap_or(-1);
    let no: String = r.try_get(3).unwrap_or_default();
    let bad = |detail: String| UnreadableRow {
        table: "webhook_events",
        id,
        out_refund_no: Some(no.clone()),
        detail,
    };
    let e = |e: postgres::Error| bad(e.to_string());
    let payload: String = r.try_get(5).map_err(e)?;
    Ok(WebhookEventRow {
        id,
        event_id: r.try_get(1).map_err(e)?,
        kind: r.try_get(2).map_err(e)?,
        out_refund_no: no.clone(),
        created_at: r.try_get(4).map_err(e)?,
        data: serde_json::from_str(&payload).map_err(|x| bad(format!("payload: {x}")))?,
        state: r
            .try_get::<_, String>(6)
            .map_err(e)?
            .parse::<WebhookState>()
            .map_err(|x| bad(format!("state: {x}")))?,
        attempts: to_u64(r.try_get(7).map_err(e)?),
        next_attempt_at: r.try_get(8).map_err(e)?,
        last_error: r.try_get(9).map_err(e)?,
        delivered_at: r.try_get(10).map_err(e)?,
    })
}

impl PgLedger {
    /// Up to `limit` events to send now: pending, due at `now`, each the earliest undelivered
    /// event of its refund, the longest-due first.
    pub fn due_webhooks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueWebhook>, LedgerError> {
        const OP: &str = "read due webhook events";
        let (now, limit) = (ms(now), limit_arg(limit));
        self.read(OP, |db| {
            let rows = db.query(
                OP,
                "SELECT e.id, e.event_id, e.out_refund_no, e.attempts, e.first_attempt_at,
                        e.type, e.queued_at, e.payload::text
                   FROM webhook_events AS e
                  WHERE e.state = 'pending' AND e.next_attempt_at <= $1
                    AND NOT EXISTS (SELECT 1 FROM webhook_events AS p
                                     WHERE p.out_refund_no = e.out_refund_no AND p.id < e.id
                                       AND p.state <> 'delivered')
                  ORDER BY e.next_attempt_at, e.id LIMIT $2",
                &[&now, &limit],
            )?;
            let mut due = Vec::with_capacity(rows.len());
            for r in &rows {
                let event_id: String = r.get(1);
                let kind: String = r.get(5);
                let payload: String = r.get(7);
                // jsonb is always valid JSON; a failure here is the server's, not a row's.
                let payload: serde_json::Value =
                    serde_json::from_str(&payload).map_err(|e| LedgerError::CorruptRow {
                        out_refund_no: r.get(2),
                        column: "webhook_events.payload",
                        detail: e.to_string(),
                    })?;
                due.push(DueWebhook {
                    id: r.get(0),
                    body: body(&event_id, &kind, r.get(6), &payload),
                    event_id,
                    out_refund_no: r.get(2),
                    attempts: to_u64(r.get(3)),
                    first_attempt_at: r.get(4),
                });
            }
            Ok(due)
        })
    }

    /// The earliest `next_attempt_at` of a pending event (`None`: nothing pending).
    pub fn next_webhook_at(&self) -> Result<Option<Timestamp>, LedgerError> {
        const OP: &str = "read the next webhook time";
        self.read(OP, |db| {
            Ok(db
                .query_one(
                    OP,
                    "SELECT min(next_attempt_at) FROM webhook_events WHERE state = 'pending'",
                    &[],
                )?
                .get(0))
        })
    }

    /// Records a wave of delivery results in one transaction; only a pending event changes.
    pub fn record_webhook_results(&self, results: &[DeliveryResult]) -> Result<(), LedgerError> {
        const OP: &str = "record webhook deliveries";
        self.write(OP, |db| {
            for r in results {
                let at = ms(r.attempted_at);
                let (state, error, next, delivered) = match &r.outcome {
                    DeliveryOutcome::Delivered => ("delivered", None, None, Some(at)),
                    DeliveryOutcome::Retry { error, at: next } => {
                        ("pending", Some(error.as_str()), Some(ms(*next)), None)
                    }
                    DeliveryOutcome::Dead { error } => ("dead", Some(error.as_str()), None, None),
                };
                db.execute(
                    OP,
                    "UPDATE webhook_events
                        SET state = $2, attempts = attempts + 1,
                            first_attempt_at = coalesce(first_attempt_at, $3),
                            next_attempt_at = coalesce($4, next_attempt_at),
                            last_error = $5, delivered_at = $6
                      WHERE id = $1 AND state = 'pending'",
                    &[&r.id, &state, &at, &next, &error, &delivered],
                )?;
            }
            Ok(())
        })
    }

    /// How many events are dead.
    pub fn dead_webhook_count(&self) -> Result<u64, LedgerError> {
        const OP: &str = "count dead webhook events";
        self.read(OP, |db| {
            Ok(to_u64(
                db.query_one(
                    OP,
                    "SELECT count(*) FROM webhook_events WHERE state = 'dead'",
                    &[],
                )?
                .get(0),
            ))
        })
    }

    /// `webhooks`: the latest `filter.limit` events matching `filter`, oldest first.
    pub fn webhook_events(
        &self,
        filter: &WebhookFilter,
    ) -> Result<Readout<WebhookEventRow>, LedgerError> {
        const OP: &str = "list webhook events";
        let (clause, args) = clause(filter);
        let limit = limit_arg(filter.limit);
        let sql = format!(
            "SELECT * FROM (SELECT {ROW_COLUMNS} FROM webhook_events {clause}
                             ORDER BY id DESC LIMIT ${}) AS latest ORDER BY id",
            args.len() + 1
        );
        self.read(OP, |db| {
            let mut params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            params.push(&limit);
            let rows = db.query_dyn(OP, &sql, &params)?;
            Ok(Readout::of(rows.iter().map(read_row).collect()))
        })
    }

    /// How many events match `filter`, ignoring its limit.
    pub fn webhook_events_total(&self, filter: &WebhookFilter) -> Result<u64, LedgerError> {
        const OP: &str = "count webhook events";
        let (clause, args) = clause(filter);
        let sql = format!("SELECT count(*) FROM webhook_events {clause}");
        self.read(OP, |db| {
            let params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows = db.query_dyn(OP, &sql, &params)?;
            Ok(rows.first().map_or(0, |r| to_u64(r.get(0))))
        })
    }

    /// `webhooks redeliver`: each named event (delivered or dead) back to pending, due at
    /// `now` with a fresh window, each audited with the values it replaced, in one
    /// transaction; an unknown or pending event refuses the whole command.
    pub fn redeliver_webhooks(
        &self,
        event_ids: &[String],
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "redeliver webhook events";
        let now = ms(now);
        self.write(OP, |db| {
            for event_id in event_ids {
                let was = db.query_opt(
                    OP,
                    "SELECT id, out_refund_no, state, attempts, delivered_at, last_error
                       FROM webhook_events WHERE event_id = $1 FOR UPDATE",
                    &[event_id],
                )?;
                let Some(was) = was else {
                    return Err(LedgerError::WebhookEventNotFound {
                        event_id: event_id.clone(),
                    });
                };
                let (id, no, state): (i64, String, String) = (was.get(0), was.get(1), was.get(2));
                if state == "pending" {
                    return Err(LedgerError::WebhookEventPending {
                        event_id: event_id.clone(),
                    });
                }
                let delivered_at: Option<Timestamp> = was.get(4);
                let detail = serde_json::json!({
                    "event_id": event_id,
                    "state": state,
                    "attempts": was.get::<_, i64>(3),
                    "delivered_at": delivered_at.map(format_ts),
                    "last_error": was.get::<_, Option<String>>(5),
                })
                .to_string();
                db.execute(
                    OP,
                    "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                     VALUES ($1, $2, 'redeliver_webhook', $3, $4, $5)",
                    &[&now, &actor, &no, &reason, &detail],
                )?;
                db.execute(
                    OP,
                    "UPDATE webhook_events
                        SET state = 'pending', attempts = 0, first_attempt_at = NULL,
                            next_attempt_at = $2, last_error = NULL, delivered_at = NULL
                      WHERE id = $1",
                    &[&id, &now],
                )?;
            }
            Ok(())
        })
    }
}

/// The WHERE clause of `filter` and its text parameters (`$1`, `$2`, ...).
fn clause(filter: &WebhookFilter) -> (String, Vec<String>) {
    let mut sql = String::from("WHERE true");
    let mut args = Vec::new();
    if let Some(state) = filter.state {
        args.push(state.as_str().to_owned());
        sql.push_str(&format!(" AND state = ${}", args.len()));
    }
    if let Some(no) = &filter.refund {
        args.push(no.as_str().to_owned());
        sql.push_str(&format!(" AND out_refund_no = ${}", args.len()));
    }
    (sql, args)
}
