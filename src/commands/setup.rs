//! Setting up: `init` creates the ledger, `check-config` proves a config file and its keys
//! are usable before the daemon is started with them.

use std::sync::Arc;

use checus_reconciler::cli::{ConfigArgs, ExitCode, LedgerArgs};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::SystemClock;
use checus_reconciler::gateway::GatewayClient;
use checus_reconciler::ledger::SCHEMA_VERSION;

use super::args::{load_config, open_or_create};
use super::output::print;
use super::{Failure, Outcome};

/// `init`: create the ledger (or open an existing one) at the current schema.
pub fn init(args: LedgerArgs, env: &Environment) -> Outcome {
    let ledger = open_or_create(&args, env)?;
    print(format!(
        "ledger ready: {} (schema version {SCHEMA_VERSION})\n",
        ledger.path().display(),
    ))?;
    Ok(ExitCode::Ok)
}

/// `check-config`: load the config and the keys, and build the gateway client from them.
pub fn check_config(args: ConfigArgs, env: &Environment) -> Outcome {
    let config = args.config;
    let cfg = load_config(&config, env)?;
    let keys = cfg.keys.load()?;
    GatewayClient::new(
        cfg.gateway.clone(),
        keys.merchant.clone(),
        keys.gateway.clone(),
        Arc::new(SystemClock),
    )
    .map_err(|e| Failure::new(ExitCode::Config, e))?;
    let mut text = String::new();
    for w in &keys.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    text.push_str(&format!(
        "config ok: {} (ledger {}, gateway {})\n",
        config.display(),
        cfg.ledger_path.display(),
        cfg.gateway.base_url
    ));
    print(text)?;
    Ok(ExitCode::Ok)
}
