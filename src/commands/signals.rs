//! Signal handling for the long-running commands: SIGTERM/SIGINT cancel the one shutdown
//! token (the only place it is cancelled), SIGHUP asks the daemon to reload its config.

use std::sync::Arc;

use checus_reconciler::cli::ExitCode;
use checus_reconciler::daemon::Reloader;
use futures_util::StreamExt;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;

use super::Failure;

/// Where SIGHUP sends the reloader; `None` for commands that do not reload.
pub type ReloadRoute = Option<(tokio::sync::mpsc::Sender<Reloader>, Reloader)>;

/// Shutdown on SIGTERM/SIGINT, reload on SIGHUP. Must run inside the async runtime.
pub fn install(token: CancellationToken, reload: ReloadRoute) -> Result<(), Failure> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Failure::new(ExitCode::Failure, e).context("installing signal handlers"))?;
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal {
                SIGHUP => match &reload {
                    Some((tx, reloader)) => {
                        tracing::info!("SIGHUP received; reloading configuration");
                        let _ = tx.send(Arc::clone(reloader)).await;
                    }
                    None => tracing::info!("SIGHUP ignored by this command"),
                },
                _ => {
                    tracing::info!(signal, "shutdown signal received");
                    token.cancel();
                }
            }
        }
    });
    Ok(())
}
