//! The webhook outbox (`webhook_events`): what the daemon's delivery task reads and records,
//! `webhooks` lists, `webhooks redeliver` resets (audited), and `status` counts. The events
//! themselves are written by schema.sql's triggers, in the transaction of the change.
//!
//! Order per refund: [`SqliteLedger::due_webhooks`] returns only the earliest undelivered event of
//! each refund (a pending or dead event earlier in id order holds the later ones back), so a
//! refund's events are sent one after the other, in the order they were written.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::types::{Readout, UnreadableRow, limit_arg, to_u64, ts_text};
use crate::domain::{Timestamp, parse_ts};
use crate::ledger::{
    DeliveryOutcome, DeliveryResult, DueWebhook, WebhookEventRow, WebhookFilter, WebhookState,
};

/// Pending events due at `?1` that are the earliest undelivered event of their refund, the
/// longest-due first, at most `?2`. Walks `webhook_events_due` in its own order (no sort) and
/// stops after `?2` heads, so a backlog of a million events costs a wave what ten cost; the
/// NOT EXISTS is one probe of `webhook_events_undelivered` per candidate. (Events held back
/// behind an earlier undelivered one of their refund are walked past: normally none.)
const DUE: &str = "\
    SELECT e.id, e.event_id, e.out_refund_no, e.attempts, e.first_attempt_at,
           json_object('id', e.event_id, 'type', e.type, 'created_at', e.queued_at,
                       'data', json(e.payload))
      FROM webhook_events AS e
     WHERE e.state = 'pending' AND e.next_attempt_at <= ?1
       AND NOT EXISTS (SELECT 1 FROM webhook_events AS p
                        WHERE p.out_refund_no = e.out_refund_no AND p.id < e.id
                          AND p.state <> 'delivered')
     ORDER BY e.next_attempt_at, e.id LIMIT ?2";

/// The dead events: a walk of the partial index `webhook_events_dead` (normally empty).
pub(super) const DEAD_COUNT: &str = "SELECT count(*) FROM webhook_events WHERE state = 'dead'";

/// The columns [`read_row`] reads, in its order.
const ROW_COLUMNS: &str = "id, event_id, type, out_refund_no, queued_at, payload, state, \
                           attempts, next_attempt_at, last_error, delivered_at";

/// One row of [`ROW_COLUMNS`]; a value that does not read is an [`UnreadableRow`].
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<WebhookEventRow, UnreadableRow>> {
    let id: i64 = r.get(0)?;
    let text = |i: usize| -> rusqlite::Result<Option<String>> {
        Ok(match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => None,
            v => Some(String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned()),
        })
    };
    let no = text(3)?.unwrap_or_default();
    let bad = |detail: String| UnreadableRow {
        table: "webhook_events",
        id,
        out_refund_no: Some(no.clone()),
        detail,
    };
    let ts = |i: usize, col: &str| -> Result<Option<Timestamp>, UnreadableRow> {
        match text(i).map_err(|e| bad(e.to_string()))? {
            None => Ok(None),
            Some(t) => parse_ts(&t)
                .map(Some)
                .map_err(|e| bad(format!("{col}: {e}"))),
        }
    };
    let parsed = (|| {
        let state = text(6)
            .map_err(|e| bad(e.to_string()))?
            .unwrap_or_default()
            .parse::<WebhookState>()
            .map_err(|e| bad(format!("state: {e}")))?;
        let payload = text(5).map_err(|e| bad(e.to_string()))?.unwrap_or_default();
        Ok(WebhookEventRow {
            id,
            event_id: text(1).map_err(|e| bad(e.to_string()))?.unwrap_or_default(),
            kind: text(2).map_err(|e| bad(e.to_string()))?.unwrap_or_default(),
            out_refund_no: no.clone(),
            created_at: ts(4, "queued_at")?.ok_or_else(|| bad("queued_at: empty".into()))?,
            data: serde_json::from_str(&payload).map_err(|e| bad(format!("payload: {e}")))?,
            state,
            attempts: to_u64(r.get::<_, i64>(7).map_err(|e| bad(e.to_string()))?),
            next_attempt_at: ts(8, "next_attempt_at")?
                .ok_or_else(|| bad("next_attempt_at: empty".into()))?,
            last_error: text(9).map_err(|e| bad(e.to_string()))?,
            delivered_at: ts(10, "delivered_at")?,
        })
    })();
    Ok(parsed)
}

impl SqliteLedger {
    /// Up to `limit` events to send now: pending, due at `now`, and each the earliest
    /// undelivered event of its refund (so at most one per refund), the longest-due first.
    pub fn due_webhooks(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueWebhook>, LedgerError> {
        const OP: &str = "read due webhook events";
        self.read(OP, |tx| {
            let mut stmt = tx.prepare_cached(DUE).during(OP)?;
            let rows = stmt
                .query_map(params![ts_text(now), limit_arg(limit)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .during(OP)?;
            let mut due = Vec::new();
            for row in rows {
                let (id, event_id, out_refund_no, attempts, first, body) = row.during(OP)?;
                due.push(DueWebhook {
                    id,
                    event_id,
                    out_refund_no,
                    attempts: to_u64(attempts),
                    // A CHECK guarantees the form; an unparsable one restarts the window.
                    first_attempt_at: first.as_deref().and_then(|t| parse_ts(t).ok()),
                    body,
                });
            }
            Ok(due)
        })
    }

    /// The earliest `next_attempt_at` of a pending event (`None`: nothing pending): the
    /// delivery task's next wake-up. One step into `webhook_events_due`.
    pub fn next_webhook_at(&self) -> Result<Option<Timestamp>, LedgerError> {
        const OP: &str = "read the next webhook time";
        let t: Option<String> = self
            .conn
            .query_row(
                "SELECT min(next_attempt_at) FROM webhook_events WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .during(OP)?;
        Ok(t.as_deref().and_then(|t| parse_ts(t).ok()))
    }

    /// Records the results of delivery attempts, all in one transaction (one fsync per wave
    /// of deliveries). Only a pending event is changed: one that an operator changed
    /// meanwhile keeps the operator's state.
    pub fn record_webhook_results(&self, results: &[DeliveryResult]) -> Result<(), LedgerError> {
        const OP: &str = "record webhook deliveries";
        self.write(OP, |tx| {
            for r in results {
                let at = ts_text(r.attempted_at);
                let (state, error, next, delivered) = match &r.outcome {
                    DeliveryOutcome::Delivered => ("delivered", None, None, Some(at.clone())),
                    DeliveryOutcome::Retry { error, at: next } => {
                        ("pending", Some(error.as_str()), Some(ts_text(*next)), None)
                    }
                    DeliveryOutcome::Dead { error } => ("dead", Some(error.as_str()), None, None),
                };
                tx.execute(
                    "UPDATE webhook_events
                        SET state = ?2, attempts = attempts + 1,
                            first_attempt_at = coalesce(first_attempt_at, ?3),
                            next_attempt_at = coalesce(?4, next_attempt_at),
                            last_error = ?5, delivered_at = ?6
                      WHERE id = ?1 AND state = 'pending'",
                    params![r.id, state, at, next, error, delivered],
                )
                .during(OP)?;
            }
            Ok(())
        })
    }

    /// How many events are dead: for `status` and the dead-events metric. A walk of the
    /// partial index `webhook_events_dead`, which holds only dead rows (normally none).
    pub fn dead_webhook_count(&self) -> Result<u64, LedgerError> {
        let n: i64 = self
            .conn
            .query_row(DEAD_COUNT, [], |r| r.get(0))
            .during("count dead webhook events")?;
        Ok(to_u64(n))
    }

    /// `webhooks`: the latest `filter.limit` events matching `filter`, oldest first.
    pub fn webhook_events(
        &self,
        filter: &WebhookFilter,
    ) -> Result<Readout<WebhookEventRow>, LedgerError> {
        const OP: &str = "list webhook events";
        let (clause, mut args) = filter.clause();
        args.push(Value::Integer(limit_arg(filter.limit)));
        let sql = format!(
            "SELECT * FROM (SELECT {ROW_COLUMNS} FROM webhook_events {clause}
                             ORDER BY id DESC LIMIT ?{}) ORDER BY id",
            args.len()
        );
        let mut stmt = self.conn.prepare(&sql).during(OP)?;
        let rows = stmt
            .query_map(params_from_iter(args), read_row)
            .during(OP)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.during(OP)?);
        }
        Ok(Readout::of(out))
    }

    /// How many events match `filter`, ignoring its limit.
    pub fn webhook_events_total(&self, filter: &WebhookFilter) -> Result<u64, LedgerError> {
        let (clause, args) = filter.clause();
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM webhook_events {clause}"),
                params_from_iter(args),
                |r| r.get(0),
            )
            .during("count webhook events")?;
        Ok(to_u64(n))
    }

    /// `webhooks redeliver`: puts each named event (delivered or dead) back to pending, due
    /// at `now` with a fresh retry window, and audits each as `redeliver_webhook` with the
    /// values it replaced, all in one transaction: an unknown or pending event refuses the
    /// whole command ([`LedgerError::WebhookEventNotFound`], [`LedgerError::WebhookEventPending`]).
    pub fn redeliver_webhooks(
        &self,
        event_ids: &[String],
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        const OP: &str = "redeliver webhook events";
        self.write(OP, |tx| {
            for event_id in event_ids {
                type Was = (i64, String, String, i64, Option<String>, Option<String>);
                let was: Option<Was> = tx
                    .query_row(
                        "SELECT id, out_refund_no, state, attempts, CAST(delivered_at AS TEXT),
                                CAST(last_error AS TEXT)
                           FROM webhook_events WHERE event_id = ?1",
                        [event_id],
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                            ))
                        },
                    )
                    .optional()
                    .during(OP)?;
                let Some((id, no, state, attempts, delivered_at, last_error)) = was else {
                    return Err(LedgerError::WebhookEventNotFound {
                        event_id: event_id.clone(),
                    });
                };
                if state == "pending" {
                    return Err(LedgerError::WebhookEventPending {
                        event_id: event_id.clone(),
                    });
                }
                let detail = serde_json::json!({
                    "event_id": event_id,
                    "state": state,
                    "attempts": attempts,
                    "delivered_at": delivered_at,
                    "last_error": last_error,
                })
                .to_string();
                tx.execute(
                    "INSERT INTO operator_actions (at, actor, action, out_refund_no, reason, detail)
                     VALUES (?1, ?2, 'redeliver_webhook', ?3, ?4, ?5)",
                    params![ts_text(now), actor, no, reason, detail],
                )
                .during(OP)?;
                tx.execute(
                    "UPDATE webhook_events
                        SET state = 'pending', attempts = 0, first_attempt_at = NULL,
                            next_attempt_at = ?2, last_error = NULL, delivered_at = NULL
                      WHERE id = ?1",
                    params![id, ts_text(now)],
                )
                .during(OP)?;
            }
            Ok(())
        })
    }
}

impl WebhookFilter {
    fn clause(&self) -> (String, Vec<Value>) {
        let mut sql = String::from("WHERE 1");
        let mut args = Vec::new();
        if let Some(state) = self.state {
            args.push(Value::Text(state.as_str().to_owned()));
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(no) = &self.refund {
            args.push(Value::Text(no.as_str().to_owned()));
            sql.push_str(&format!(" AND out_refund_no = ?{}", args.len()));
        }
        (sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        parse_ts(s).unwrap()
    }

    /// A ledger with refunds, two events each (finalized, then a discrepancy),
    /// written through the SQL contract.
    fn ledger_with_events() -> (tempfile::TempDir, SqliteLedger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(&dir.path().join("ledger.sqlite")).unwrap();
        for no in ["R-1", "R-2"] {
            ledger
                .conn
                .execute_batch(&format!(
                    "INSERT INTO refunds (out_refund_no, amount, currency) VALUES ('{no}', '1', 'USD');
                     INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
                          VALUES ('{no}', 'REFUND_SUCCESS', '1', 'USD', '2026-11-25T10:00:00.000Z');
                     INSERT INTO notifications (out_refund_no, status, amount, currency, notify_time)
                          VALUES ('{no}', 'REFUND_FAILED', '1', 'USD', '2026-11-25T10:00:00.000Z');"
                ))
                .unwrap();
        }
        (dir, ledger)
    }

    fn due_ids(l: &SqliteLedger, now: &str) -> Vec<i64> {
        l.due_webhooks(ts(now), 10)
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect()
    }

    fn result(id: i64, outcome: DeliveryOutcome) -> DeliveryResult {
        DeliveryResult {
            id,
            attempted_at: ts("2099-01-01T00:00:00.000Z"),
            outcome,
        }
    }

    #[test]
    fn only_the_earliest_undelivered_event_of_each_refund_is_due() {
        let (_dir, l) = ledger_with_events();
        let far = "2099-01-01T00:00:00.000Z";
        assert_eq!(due_ids(&l, far), [1, 3]);
        let body: serde_json::Value =
            serde_json::from_str(&l.due_webhooks(ts(far), 1).unwrap()[0].body).unwrap();
        assert_eq!(body["type"], "refund.finalized");
        assert_eq!(body["data"]["amount"], "1");
        // A retry waits for its time; a delivery lets the refund's next event through.
        let retry_at = ts("2099-01-01T00:01:00.000Z");
        l.record_webhook_results(&[
            result(1, DeliveryOutcome::Delivered),
            result(
                3,
                DeliveryOutcome::Retry {
                    error: "HTTP 503".into(),
                    at: retry_at,
                },
            ),
        ])
        .unwrap();
        assert_eq!(due_ids(&l, far), [2]);
        assert_eq!(due_ids(&l, "2099-01-01T00:01:00.000Z"), [2, 3]);
        // A dead event holds its refund's later events back until it is redelivered.
        l.record_webhook_results(&[result(
            3,
            DeliveryOutcome::Dead {
                error: "HTTP 500".into(),
            },
        )])
        .unwrap();
        assert_eq!(l.dead_webhook_count().unwrap(), 1);
        assert_eq!(due_ids(&l, "2099-01-02T00:00:00.000Z"), [2]);
        let dead = l
            .webhook_events(&WebhookFilter {
                state: Some(WebhookState::Dead),
                refund: None,
                limit: 10,
            })
            .unwrap();
        let id = dead.rows[0].event_id.clone();
        assert_eq!(dead.rows[0].attempts, 2);
        assert_eq!(dead.rows[0].last_error.as_deref(), Some("HTTP 500"));
        l.redeliver_webhooks(&[id], "ops", "fixed", ts("2099-01-01T00:02:00.000Z"))
            .unwrap();
        assert_eq!(l.dead_webhook_count().unwrap(), 0);
        assert_eq!(due_ids(&l, "2099-01-01T00:02:00.000Z"), [2, 3]);
        let again = &l.due_webhooks(ts(far), 10).unwrap()[0];
        assert_eq!((again.attempts, again.first_attempt_at), (0, None));
    }

    #[test]
    fn a_prune_removes_the_delivered_events_of_the_refunds_it_removes_and_keeps_the_rest() {
        let (_dir, l) = ledger_with_events();
        // R-1's two events delivered; R-2's first delivered, its second pending.
        l.record_webhook_results(&[
            result(1, DeliveryOutcome::Delivered),
            result(2, DeliveryOutcome::Delivered),
            result(3, DeliveryOutcome::Delivered),
        ])
        .unwrap();
        // Both refunds' discrepancies must be resolved for a prune to take them.
        l.conn
            .execute_batch(
                "UPDATE discrepancies SET resolved_at = '2026-11-25T11:00:00.000Z',
                        resolved_by = 'ops', resolution = 'checked'",
            )
            .unwrap();
        l.prune(
            ts("2099-01-01T00:00:00.000Z"),
            "ops",
            "tidy",
            None,
            ts("2099-01-01T00:00:00.000Z"),
        )
        .unwrap();
        let left: Vec<(i64, String)> = l
            .conn
            .prepare("SELECT id, state FROM webhook_events ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(left, [(4, "pending".to_owned())]);
    }

    #[test]
    fn the_due_and_dead_queries_walk_their_partial_indexes() {
        let (_dir, l) = ledger_with_events();
        let plan = |sql: &str| -> String {
            let mut stmt = l
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
                .join("\n")
        };
        let due = DUE
            .replace("?1", "'2099-01-01T00:00:00.000Z'")
            .replace("?2", "10");
        let p = plan(&due);
        assert!(p.contains("webhook_events_due"), "{p}");
        assert!(p.contains("webhook_events_undelivered"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "no sort: {p}");
        let p = plan(DEAD_COUNT);
        assert!(p.contains("webhook_events_dead"), "{p}");
    }
}
