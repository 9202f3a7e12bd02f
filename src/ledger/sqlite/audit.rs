//! `audit`: the operator actions (`operator_actions`, append-only), filtered by refund and
//! time, the latest first up to a limit and returned in the order they happened. The table is
//! small (one row per operator command), so the count of all matches is cheap too.

use rusqlite::params_from_iter;
use rusqlite::types::Value;

use super::SqliteLedger;
use super::error::{During, LedgerError};
use super::rows::{RawOperatorAction, RawRow, select_each};
use super::types::{OperatorActionRow, Readout, limit_arg, to_u64, ts_text};
use crate::ledger::AuditFilter;

impl SqliteLedger {
    /// The latest `filter.limit` operator actions matching `filter`, oldest first (the order
    /// they happened in). A row that cannot be read comes back in `unreadable`.
    pub fn audit(&self, filter: &AuditFilter) -> Result<Readout<OperatorActionRow>, LedgerError> {
        let (clause, mut args) = filter.clause();
        args.push(Value::Integer(limit_arg(filter.limit)));
        // The latest N by id (ids increase in action order), then back into time order.
        let sql = format!(
            "SELECT * FROM (SELECT {} FROM operator_actions {clause} ORDER BY id DESC LIMIT ?{})
              ORDER BY id",
            RawOperatorAction::COLUMNS,
            args.len()
        );
        select_each::<RawOperatorAction>(
            &self.conn,
            "list operator actions",
            &sql,
            params_from_iter(args),
        )
        .map(Readout::of)
    }

    /// How many operator actions match `filter`, ignoring its limit.
    pub fn audit_total(&self, filter: &AuditFilter) -> Result<u64, LedgerError> {
        let (clause, args) = filter.clause();
        let sql = format!("SELECT count(*) FROM operator_actions {clause}");
        let n: i64 = self
            .conn
            .query_row(&sql, params_from_iter(args), |r| r.get(0))
            .during("count operator actions")?;
        Ok(to_u64(n))
    }
}

impl AuditFilter {
    /// The `WHERE` clause and its bound values.
    fn clause(&self) -> (String, Vec<Value>) {
        let mut sql = String::from("WHERE 1");
        let mut args = Vec::new();
        if let Some(no) = &self.refund {
            args.push(Value::Text(no.as_str().to_owned()));
            sql.push_str(&format!(" AND out_refund_no = ?{}", args.len()));
        }
        if let Some(since) = self.since {
            args.push(Value::Text(ts_text(since)));
            sql.push_str(&format!(" AND at >= ?{}", args.len()));
        }
        (sql, args)
    }
}
