//! Setting up: `init` creates the ledger, `migrate` upgrades an older one, `verify-ledger`
//! checks it still has schema.sql's guarantees, `check-config` proves a config file and its
//! keys are usable before the daemon is started with them.

use std::sync::Arc;

use checus_reconciler::cli::{CheckConfigArgs, ExitCode, InitArgs, MigrateArgs, VerifyLedgerArgs};
use checus_reconciler::config::Environment;
use checus_reconciler::domain::{Clock, SystemClock};
use checus_reconciler::gateway::GatewayClient;
use checus_reconciler::ledger::migrate::MigrationReport;
use checus_reconciler::ledger::{self, SchemaCheck};

use super::args::{load_config, open_or_create, resolve_ledger};
use super::output::{emit, print, print_json};
use super::{Failure, Outcome};

/// `init`: create the ledger (or open an existing one) at the current schema.
pub fn init(args: InitArgs, env: &Environment) -> Outcome {
    let ledger = open_or_create(&args.ledger, env)?;
    let version = ledger.target().schema_version();
    if args.json {
        print_json(&serde_json::json!({
            "ledger": ledger.target().to_string(),
            "schema_version": version,
        }))?;
    } else {
        print(format!(
            "ledger ready: {} (schema version {version})\n",
            ledger.target(),
        ))?;
    }
    Ok(ExitCode::Ok)
}

/// `migrate [--dry-run] [--json]`: upgrades an older ledger (backup first) or, with
/// `--dry-run`, prints the migrations that would run and changes nothing. The work is in
/// `ledger::migrate`; this only prints. Exit 4 when the ledger is refused or the migration
/// failed (the ledger is then unchanged).
pub fn migrate(args: MigrateArgs, env: &Environment) -> Outcome {
    let target = resolve_ledger(&args.ledger, env)?;
    let now = SystemClock.now();
    let report = if args.dry_run {
        ledger::migrate_plan(&target, now)?
    } else {
        super::args::warn_if_root_on_service_ledger(&target);
        ledger::migrate_apply(&target, now)?
    };
    emit(args.json, &report, migration_text)
}

/// A migration report for people: the versions, the backup, each migration's steps.
fn migration_text(r: &MigrationReport) -> String {
    let ledger = r.ledger.display();
    if r.is_current() {
        return format!(
            "ledger {ledger} is at schema version {} already; nothing to do\n",
            r.to
        );
    }
    let mut out = format!("ledger {ledger}: schema version {} -> {}\n", r.from, r.to);
    if let Some(b) = &r.backup {
        let verb = if r.dry_run {
            "would be copied to"
        } else {
            "copied to"
        };
        out += &format!("backup: {verb} {}\n", b.display());
    }
    for step in &r.steps {
        out += &format!("{} ({} -> {}):\n", step.name, step.from, step.to);
        for line in &step.summary {
            out += &format!("  - {line}\n");
        }
    }
    out += &if r.dry_run {
        "dry run: nothing was changed; run without --dry-run to migrate\n".to_owned()
    } else {
        format!("migrated: ledger {ledger} is at schema version {}\n", r.to)
    };
    out
}

/// `verify-ledger [--json]`: compares the ledger's tables, indexes and triggers with
/// schema.sql, read-only. Exit 0 when all are present and unchanged; exit 4 (after printing
/// the list) when any is missing or altered, the same code every other command refuses such a
/// ledger with.
pub fn verify_ledger(args: VerifyLedgerArgs, env: &Environment) -> Outcome {
    let target = resolve_ledger(&args.ledger, env)?;
    let check = ledger::verify(&target)?;
    emit(args.json, &check, verify_text)?;
    Ok(if check.is_intact() {
        ExitCode::Ok
    } else {
        ExitCode::Ledger
    })
}

/// A schema check for people: one line when intact, else one line per difference.
fn verify_text(c: &SchemaCheck) -> String {
    let ledger = c.ledger.display();
    if c.is_intact() {
        return format!(
            "ledger {ledger} has every table, index and trigger of schema version {} \
             ({} compared): its guarantees hold for every writer that keeps them\n",
            c.version, c.compared
        );
    }
    let mut out = format!(
        "ledger {ledger} lacks guarantees of schema version {}: {} of {} objects differ\n",
        c.version,
        c.differences.len(),
        c.compared
    );
    for d in &c.differences {
        out += &format!("  {d}\n");
    }
    out
}

/// `check-config`: load the config and the keys, and build the gateway client from them.
pub fn check_config(args: CheckConfigArgs, env: &Environment) -> Outcome {
    let config = args.config.config;
    let cfg = load_config(&config, env)?;
    let keys = cfg.keys.load()?;
    GatewayClient::new(
        cfg.gateway.clone(),
        keys.merchant.clone(),
        keys.gateway.clone(),
        Arc::new(SystemClock),
    )
    .map_err(|e| Failure::new(ExitCode::Config, e))?;
    if args.json {
        print_json(&serde_json::json!({
            "config": config,
            "ledger": cfg.ledger.to_string(),
            "gateway": cfg.gateway.base_url,
            "warnings": keys.warnings,
        }))?;
        return Ok(ExitCode::Ok);
    }
    let mut text = String::new();
    for w in &keys.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    text.push_str(&format!(
        "config ok: {} (ledger {}, gateway {})\n",
        config.display(),
        cfg.ledger,
        cfg.gateway.base_url
    ));
    print(text)?;
    Ok(ExitCode::Ok)
}
