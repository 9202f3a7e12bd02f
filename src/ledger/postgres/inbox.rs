//! Notifications on PostgreSQL: recorded with the merchant contract's own `record_notification`
//! INSERT (src/ledger/contract.postgres.sql, verbatim), one or a batch per transaction, each
//! reading back the effect schema.postgres.sql's trigger gave it.

use super::{Db, PgLedger};
use crate::domain::format_ts;
use crate::ledger::contract;
use crate::ledger::error::LedgerError;
use crate::ledger::types::{NotificationEffect, NotificationRecord};

/// The contract's `record_notification` statement, exactly as the merchant's app runs it.
fn record_notification_sql() -> &'static str {
    contract::postgres_snippet("record_notification")
        .expect("contract.postgres.sql has record_notification")
}

impl PgLedger {
    /// Inserts a verified notification exactly as the merchant's app does; the trigger applies
    /// it (finalize, duplicate, conflict, mismatch, unknown refund).
    pub fn record_notification(&self, n: &NotificationRecord) -> Result<(), LedgerError> {
        self.write("record notification", |db| insert_one(db, n).map(|_| ()))
    }

    /// Group commit for notifications: every record of `batch` in ONE transaction, each in
    /// its own savepoint (one the ledger refuses is rolled back alone, with its own error),
    /// each with the effect the trigger gave it. `Err`: none of the batch was written, and no
    /// notification may be acknowledged.
    pub fn record_notifications(
        &mut self,
        batch: &[NotificationRecord],
    ) -> Result<Vec<Result<NotificationEffect, LedgerError>>, LedgerError> {
        const OP: &str = "record notifications";
        self.write(OP, |db| {
            let mut out = Vec::with_capacity(batch.len());
            for n in batch {
                let result = db.savepoint(OP, |db| insert_one(db, n))?;
                if let Err(e) = &result
                    && e.is_pg_retryable()
                {
                    return Err(result.unwrap_err());
                }
                out.push(result);
            }
            Ok(out)
        })
    }
}

/// One contract INSERT (every value bound as text, as the contract asks) and the effect its
/// trigger stored. The row's id is the notifications sequence's current value in this session
/// (the trigger inserts into other tables only, so `lastval()` would not do).
fn insert_one(db: &mut Db<'_>, n: &NotificationRecord) -> Result<NotificationEffect, LedgerError> {
    const OP: &str = "record notification";
    let amount = n.amount.to_string();
    let finish = n.refund_finish_time.map(format_ts);
    let notify = format_ts(n.notify_time);
    db.execute(
        OP,
        record_notification_sql(),
        &[
            &n.out_refund_no.as_str(),
            &n.status.as_str(),
            &n.refund_trade_no,
            &amount,
            &n.currency.as_str(),
            &finish,
            &notify,
        ],
    )?;
    let effect: Option<String> = db
        .query_one(
            OP,
            "SELECT effect FROM notifications
              WHERE id = currval(pg_get_serial_sequence('notifications', 'id'))",
            &[],
        )?
        .get(0);
    let effect = effect.unwrap_or_default();
    effect.parse().map_err(|_| LedgerError::CorruptRow {
        out_refund_no: n.out_refund_no.as_str().to_owned(),
        column: "notifications.effect",
        detail: format!("{effect:?} is not an effect"),
    })
}
