//! `run`: the reconciliation daemon, with signals wired to its shutdown token and SIGHUP
//! wired to a config reload.

use std::sync::Arc;

use checus_reconciler::cli::{ConfigArgs, ExitCode};
use checus_reconciler::config::{Config, Environment};
use checus_reconciler::daemon::{self, Reloader};
use checus_reconciler::domain::SystemClock;
use checus_reconciler::logging::{self, Sink};
use checus_reconciler::notify::Notifier;
use tokio_util::sync::CancellationToken;

use super::args::load_config;
use super::{Outcome, signals};

/// `run`: load the config, start logging as it says, and run until SIGTERM/SIGINT.
pub async fn run(args: ConfigArgs, env: Environment) -> Outcome {
    let config = args.config;
    let cfg = load_config(&config, &env)?;
    // Keys before logging: a config or key error is then the one line `main` prints (exit
    // 3), with nothing logged before it (such as a journald fallback warning).
    let keys = cfg.load_keys()?;
    let sink = logging::init(cfg.log.format, &cfg.log.level, &env);
    if let Sink::TextAfterJournaldFailed(e) = &sink {
        tracing::warn!(error = %e, "journald socket unavailable; logging text to stderr");
    }
    let token = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let reloader: Reloader = {
        let env = env.clone();
        Arc::new(move || {
            let cfg = Config::load(&config, &env)?;
            let keys = cfg.load_keys()?;
            Ok((cfg, keys))
        })
    };
    signals::install(token.clone(), Some((reload_tx, reloader)))?;
    let hooks = daemon::Hooks {
        notify: Notifier::from_env(&env),
        ..daemon::Hooks::default()
    };
    daemon::run(cfg, keys, Arc::new(SystemClock), token, reload_rx, hooks).await?;
    Ok(ExitCode::Ok)
}
