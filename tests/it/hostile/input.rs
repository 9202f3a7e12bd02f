//! Hostile input: see the module list in hostile/mod.rs.
