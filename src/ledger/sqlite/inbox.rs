//! The daemon's notification inbox: verified Checus refund notifications recorded through the
//! merchant's SQL contract ([`super::contract`], snippet `record_notification`), many per
//! transaction (group commit), each reading back what the schema's trigger did with it.

use rusqlite::named_params;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::types::{NotificationEffect, NotificationRecord, ts_text};
use crate::ledger::contract;

/// The contract's `record_notification` statement, exactly as the merchant's app runs it.
fn record_notification_sql() -> &'static str {
    contract::snippet("record_notification").expect("contract.sql has record_notification")
}

impl SqliteLedger {
    /// Group commit for notifications: inserts every record of `batch` with the contract's
    /// `record_notification` statement in ONE transaction, and returns, per record, the
    /// effect the ledger's trigger gave it (finalized, already final, conflicting final,
    /// mismatch, unknown refund).
    ///
    /// Each record runs inside its own savepoint: one the ledger refuses (a CHECK) is rolled
    /// back alone and returns its own error, and the others still commit. Nothing is durable,
    /// and no notification may be acknowledged, before this method returns `Ok`; on `Err`
    /// (the transaction as a whole failed: the file busy past the busy timeout, a full disk)
    /// none of the batch was written.
    pub fn record_notifications(
        &mut self,
        batch: &[NotificationRecord],
    ) -> Result<Vec<Result<NotificationEffect, LedgerError>>, LedgerError> {
        const OP: &str = "record notifications";
        self.write(OP, |tx| {
            let mut out = Vec::with_capacity(batch.len());
            for n in batch {
                tx.prepare_cached("SAVEPOINT record_notification")
                    .during(OP)?
                    .execute([])
                    .during(OP)?;
                let result = insert_one(tx, n);
                if result.is_err() {
                    tx.prepare_cached("ROLLBACK TO record_notification")
                        .during(OP)?
                        .execute([])
                        .during(OP)?;
                }
                tx.prepare_cached("RELEASE record_notification")
                    .during(OP)?
                    .execute([])
                    .during(OP)?;
                out.push(result);
            }
            Ok(out)
        })
    }
}

/// One contract INSERT and the effect its trigger stored.
fn insert_one(
    tx: &rusqlite::Transaction<'_>,
    n: &NotificationRecord,
) -> Result<NotificationEffect, LedgerError> {
    const OP: &str = "record notification";
    tx.prepare_cached(record_notification_sql())
        .during(OP)?
        .execute(named_params! {
            ":out_refund_no": n.out_refund_no.as_str(),
            ":status": n.status.as_str(),
            ":refund_trade_no": n.refund_trade_no,
            ":amount": n.amount.to_string(),
            ":currency": n.currency.as_str(),
            ":refund_finish_time": n.refund_finish_time.map(ts_text),
            ":notify_time": ts_text(n.notify_time),
        })
        .during(OP)?;
    let id = tx.last_insert_rowid();
    let effect: String = tx
        .prepare_cached("SELECT effect FROM notifications WHERE id = ?1")
        .during(OP)?
        .query_row([id], |r| r.get(0))
        .during(OP)?;
    effect.parse().map_err(|_| LedgerError::CorruptRow {
        out_refund_no: n.out_refund_no.as_str().to_owned(),
        column: "notifications.effect",
        detail: format!("{effect:?} is not an effect"),
    })
}
