//! `query`: ask Checus about one refund now, through the same worker the daemon builds
//! (`daemon::build_worker`), so the attempt is recorded like any other. Run by an operator, it
//! reads `credential:` keys where the running service has them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use checus_reconciler::cli::{ExitCode, QueryArgs};
use checus_reconciler::config::{Environment, KeySource, KeySources};
use checus_reconciler::daemon::build_worker;
use checus_reconciler::domain::SystemClock;
use checus_reconciler::ledger::{self, OpenMode};
use checus_reconciler::worker::LedgerHandle;
use checus_reconciler::{logging, report};

use super::args::{load_config, refund_no, warn_if_root_on_service_ledger};
use super::output::emit;
use super::{Failure, Outcome};

/// `query`: one signed /refundQuery now; prints what was learned and decided.
pub async fn query(args: QueryArgs, env: Environment) -> Outcome {
    let mut cfg = load_config(&args.config.config, &env)?;
    // Operator commands log to stderr as asked; only `run` looks at $JOURNAL_STREAM.
    logging::init(cfg.log.format, "warn", &Environment::default());
    let no = refund_no(&args.out_refund_no)?;
    // A query never delivers webhooks: their secret is not read (the operator may not be
    // able to read it, and need not).
    cfg.keys.webhook_secret = None;
    let service = Path::new(SERVICE_CREDENTIALS);
    let unfound = use_service_credentials(&mut cfg.keys, service);
    let keys = cfg.keys.load().map_err(|e| match &unfound {
        Some(name) => Failure::new(
            ExitCode::Config,
            anyhow::anyhow!(
                "{}; {}",
                checus_reconciler::logging::one_line_chain(&e),
                how_to_read_credentials(name, service)
            ),
        ),
        None => e.into(),
    })?;
    let target = cfg.ledger.clone();
    warn_if_root_on_service_ledger(&target);
    // On the blocking pool, as the daemon opens its own: the PostgreSQL engine's synchronous
    // client runs a runtime of its own, which cannot start on this runtime's thread (it
    // panicked: "Cannot start a runtime from within a runtime"); SQLite's open blocks too.
    let opening = tokio::task::spawn_blocking(move || ledger::open(&target, OpenMode::Existing));
    let mut ledger = match opening.await {
        Ok(opened) => opened?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    // The attempt is this host's node's (`worker.node_name`), like the daemon's.
    ledger.set_node(cfg.worker.node_name.clone());
    // A client the config cannot build is a config error (exit 3), as for `run`.
    let worker = build_worker(
        &cfg,
        &keys,
        LedgerHandle::new(ledger),
        Arc::new(SystemClock),
    )?;
    let processed = worker.query_now(&no).await?;
    let summary = report::QuerySummary::from_processed(&no, &processed);
    emit(args.json, &summary, report::QuerySummary::render)
}

/// Where systemd puts the service's credentials while it runs (`LoadCredential=`), readable
/// by the service's user.
const SERVICE_CREDENTIALS: &str = "/run/credentials/checus-reconciler.service";

/// Points the `credential:` keys that have no `$CREDENTIALS_DIRECTORY` at `service_dir`, the
/// service's own credentials, when this user can read that directory: an operator running
/// `query` as the service user while the service runs gets the very keys the daemon uses.
/// Returns the first credential name left without a directory (`None`: all have one).
fn use_service_credentials(keys: &mut KeySources, service_dir: &Path) -> Option<String> {
    let readable = std::fs::read_dir(service_dir).is_ok();
    let mut unfound = None;
    for source in [&mut keys.merchant_private_key, &mut keys.gateway_public_key] {
        if let KeySource::Credential {
            name,
            dir: dir @ None,
        } = source
        {
            if readable {
                *dir = Some(PathBuf::from(service_dir));
            } else if unfound.is_none() {
                unfound = Some(name.clone());
            }
        }
    }
    unfound
}

/// What to do when `credential:` keys cannot be found: exactly how to run `query` so that
/// they can.
fn how_to_read_credentials(name: &str, service_dir: &Path) -> String {
    format!(
        "query reads credential:{name} from $CREDENTIALS_DIRECTORY, else from the running \
         service's {} (not readable here: the service is not running, or this is not its \
         user). Run it as the service user while the service runs (sudo -u checus-reconciler \
         checus-reconciler query ...), or point it at the key files: sudo \
         CREDENTIALS_DIRECTORY=/etc/checus-reconciler/keys checus-reconciler query ...",
        service_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> KeySources {
        KeySources {
            merchant_private_key: KeySource::Credential {
                name: "merchant-private-key".into(),
                dir: None,
            },
            gateway_public_key: KeySource::Credential {
                name: "gateway-public-key".into(),
                dir: None,
            },
            webhook_secret: None,
        }
    }

    #[test]
    fn credential_keys_are_read_from_the_services_directory_when_it_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = credentials();
        assert_eq!(use_service_credentials(&mut keys, dir.path()), None);
        for source in [&keys.merchant_private_key, &keys.gateway_public_key] {
            let KeySource::Credential { dir: Some(d), .. } = source else {
                panic!("{source:?}")
            };
            assert_eq!(d, dir.path());
        }
        // $CREDENTIALS_DIRECTORY, when set, wins; file: keys are left alone.
        let mut keys = credentials();
        keys.merchant_private_key = KeySource::Credential {
            name: "merchant-private-key".into(),
            dir: Some("/elsewhere".into()),
        };
        keys.gateway_public_key = KeySource::File("/k.pem".into());
        assert_eq!(use_service_credentials(&mut keys, dir.path()), None);
        assert!(matches!(
            &keys.merchant_private_key,
            KeySource::Credential { dir: Some(d), .. } if d == Path::new("/elsewhere")
        ));
        assert_eq!(keys.gateway_public_key, KeySource::File("/k.pem".into()));
        // Not readable (here: missing): the first key without a directory is named.
        let mut keys = credentials();
        let missing = dir.path().join("not-running");
        assert_eq!(
            use_service_credentials(&mut keys, &missing).as_deref(),
            Some("merchant-private-key")
        );
        let how = how_to_read_credentials("merchant-private-key", &missing);
        assert!(
            how.contains("sudo -u checus-reconciler") && how.contains("CREDENTIALS_DIRECTORY=")
        );
    }
}
