//! Hostile ledger: see the module list in hostile/mod.rs.
