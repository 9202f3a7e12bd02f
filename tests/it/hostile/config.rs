//! Hostile config: see the module list in hostile/mod.rs.
