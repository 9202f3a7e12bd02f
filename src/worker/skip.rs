//! Rows the worker cannot use: one bad row never stops a sweep (issue 10, part 2).
//!
//! A row the ledger hands back unreadable (a stored value the schema does not allow, planted
//! past its CHECKs) or whose update the ledger refuses (a CHECK or a trigger on that row) is
//! skipped, flagged (`row_unreadable`, `row_unwritable`) when the ledger lets it be, counted in
//! the sweep's record (`sweeps.unreadable`) and logged at ERROR once. A flagged row leaves the
//! due list (the due query passes it) until an operator corrects it and clears the flag. A row
//! that cannot even be flagged goes on the worker's own [`SkipList`], which the due list and
//! the next wake-up pass the same way, for as long as the daemon runs.
//!
//! What is wrong with the ledger as a whole (I/O, a full disk, a lock held too long) is not a
//! row's fault: that still fails the sweep, which records its error for `status`.

use std::sync::{Mutex, MutexGuard};

use tracing::error;

use crate::domain::{OutcomeClass, QueryReport, Timestamp};
use crate::ledger::{LedgerError, SkipList, UnreadableRow};

use super::LedgerHandle;

/// The worker's skip list, shared by its sweeps' tasks.
#[derive(Debug, Default)]
pub(super) struct Skipping {
    list: Mutex<SkipList>,
}

impl Skipping {
    fn lock(&self) -> MutexGuard<'_, SkipList> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the skip list, for a ledger call.
    pub(super) fn snapshot(&self) -> SkipList {
        self.lock().clone()
    }

    /// Takes over the skip list of a worker this one replaces (SIGHUP reload), so the rows it
    /// skipped are neither logged again nor queried.
    pub(super) fn carry_over(&self, previous: &Skipping) {
        let theirs = previous.snapshot();
        let mut mine = self.lock();
        mine.ids.extend(theirs.ids);
        mine.refund_nos.extend(theirs.refund_nos);
    }

    /// Deals with rows a read could not read: each new one is flagged `row_unreadable` (or,
    /// if even that fails, put on the skip list) and logged at ERROR; one met before is only
    /// counted. Returns how many rows were skipped. Fails only when the ledger itself fails.
    pub(super) async fn unreadable(
        &self,
        ledger: &LedgerHandle,
        rows: Vec<UnreadableRow>,
        now: Timestamp,
    ) -> Result<u64, LedgerError> {
        let mut skipped = 0;
        for row in rows {
            skipped += 1;
            if self.lock().ids.contains(&row.id) {
                continue;
            }
            let (id, detail) = (row.id, row.detail.clone());
            let flagged = ledger
                .call(move |l| match l.flag_unreadable(id, now, &detail) {
                    Err(e) if e.is_row_refusal() => Ok(false),
                    other => other,
                })
                .await?;
            if flagged {
                error!(
                    table = row.table,
                    row = row.id,
                    out_refund_no = row.out_refund_no.as_deref().unwrap_or(""),
                    error = %row.detail,
                    "row unreadable; flagged row_unreadable and skipped"
                );
            } else {
                self.lock().ids.insert(row.id);
                error!(
                    table = row.table,
                    row = row.id,
                    out_refund_no = row.out_refund_no.as_deref().unwrap_or(""),
                    error = %row.detail,
                    "row unreadable and cannot be flagged; skipped while the daemon runs"
                );
            }
        }
        Ok(skipped)
    }

    /// Deals with an attempt the ledger refused to record because of this refund's row: the
    /// attempt is recorded bare and the refund flagged `row_unwritable`, or, if even that is
    /// refused, the refund goes on the skip list. Logged at ERROR either way (a refund that
    /// is flagged or skipped is not queried again, so this happens once).
    pub(super) async fn unwritable(
        &self,
        ledger: &LedgerHandle,
        sweep: Option<i64>,
        report: &QueryReport,
        class: OutcomeClass,
        refusal: &LedgerError,
    ) -> Result<(), LedgerError> {
        let text = crate::logging::one_line_chain(refusal);
        let (attempt, why) = (report.clone(), text.clone());
        let recorded = ledger
            .call(
                move |l| match l.record_refused_attempt(sweep, &attempt, class, &why) {
                    Err(e) if e.is_row_refusal() => Ok(false),
                    other => other.map(|()| true),
                },
            )
            .await?;
        let no = report.out_refund_no.as_str();
        if recorded {
            error!(
                out_refund_no = no,
                outcome = class.as_str(),
                error = %text,
                "attempt refused by the ledger; recorded bare, refund flagged row_unwritable and skipped"
            );
        } else {
            self.lock().refund_nos.insert(no.to_owned());
            error!(
                out_refund_no = no,
                outcome = class.as_str(),
                error = %text,
                "attempt refused by the ledger and the refund cannot be flagged; skipped while the daemon runs"
            );
        }
        Ok(())
    }
}
