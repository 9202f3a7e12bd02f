//! What the benchmark harness reads from the engine and the product never needs: the plan of
//! the worker's claim (`bench pg-claim` prints it beside the claim's cost, issue 14 part 5).

use super::queue::CLAIM;
use super::{PgLedger, ms};
use crate::domain::Timestamp;
use crate::ledger::error::{During, LedgerError};
use crate::ledger::types::limit_arg;

impl PgLedger {
    /// `EXPLAIN (ANALYZE, BUFFERS)` of the worker's claim ([`PgLedger::claim_due`]'s statement
    /// with the same arguments and its `SET LOCAL enable_bitmapscan = off`), one line per plan
    /// line. It runs inside a savepoint that is rolled back, so nothing stays leased.
    pub fn explain_claim(
        &self,
        now: Timestamp,
        limit: usize,
        node: &str,
        lease_until: Timestamp,
    ) -> Result<Vec<String>, LedgerError> {
        const OP: &str = "explain the claim";
        let (now, until, limit) = (ms(now), ms(lease_until), limit_arg(limit));
        let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", CLAIM.as_str());
        self.write(OP, |db| {
            let mut sp = db.tx.savepoint("explain_claim").during(OP)?;
            sp.batch_execute("SET LOCAL enable_bitmapscan = off")
                .during(OP)?;
            let rows = sp.query(&sql, &[&now, &limit, &node, &until]).during(OP)?;
            sp.rollback().during(OP)?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }
}
