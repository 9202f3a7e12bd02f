//! The daemon's one HTTP listener: binding it ([`Listener::bind`]), serving an axum
//! [`axum::Router`] on it ([`Listener::serve`]) and stopping it gracefully ([`Server::stop`]).
//! The routes and the state they share are in [`routes`]; the daemon ([`crate::daemon`])
//! starts the listener before `READY=1`, moves it on a SIGHUP that changes `http.listen`, and
//! stops it when the drain begins.
//!
//! The accept loop is ours rather than `axum::serve`, because `axum::serve` sets none of the
//! limits a listener facing a network needs:
//! - at most [`MAX_CONNECTIONS`] connections at once: one more is accepted and closed at once
//!   (so a flood costs a file descriptor for a moment, never a task or a buffer);
//! - [`HEADER_READ_TIMEOUT`] to send a request's head (hyper closes a slow or idle
//!   connection, keep-alive ones included);
//! - [`REQUEST_TIMEOUT`] for a whole request (408), the same for reading its body, and a body
//!   cap of [`BODY_LIMIT`] bytes (413), which issue 13's routes that take a body rely on.

pub mod api;
pub mod notify;
pub mod routes;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use routes::{AppState, router};
pub use token::{ApiToken, TokenError};

/// Connections served at once. Prometheus, a load balancer's probes and an operator's curl
/// need a handful; the rest of the 64 is headroom for issue 13's notification route.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's head, and how long a kept-alive connection may
/// sit idle before the next one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take, its body included (408 past it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body accepted (413 past it). Nothing served today takes a body; a
/// signed notification (issue 13) is a few KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long in-flight requests get to finish once the listener stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The listener's failures.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, not an address of this host, a privileged port).
    #[error("http.listen: cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A bound socket, not yet serving: bound first so a bad address fails start-up (or a reload)
/// before anything else changes.
#[derive(Debug)]
pub struct Listener {
    socket: std::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` (port 0: any free port, see [`Listener::local_addr`]).
    pub fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let bind_failed = |source| HttpError::Bind { addr, source };
        let socket = std::net::TcpListener::bind(addr).map_err(bind_failed)?;
        socket.set_nonblocking(true).map_err(bind_failed)?;
        let addr = socket.local_addr().map_err(bind_failed)?;
        Ok(Self { socket, addr })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` on the caller's tokio runtime until [`Server::stop`]. Logs "http
    /// listening" with the address.
    pub fn serve(self, app: axum::Router) -> Result<Server, HttpError> {
        let addr = self.addr;
        let socket = tokio::net::TcpListener::from_std(self.socket)
            .map_err(|source| HttpError::Bind { addr, source })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(socket, app, stop.clone()));
        info!(address = %addr, "http listening");
        Ok(Server { addr, stop, task })
    }
}

/// A serving listener.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    /// Cancelled to stop accepting (the socket closes at once) and finish what is in flight.
    stop: CancellationToken,
    /// The accept loop; it ends once in-flight requests are done or [`STOP_GRACE`] passed.
    task: JoinHandle<()>,
}

impl Server {
    /// The address it serves.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting now; in-flight requests finish in the background.
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Stops accepting and waits for in-flight requests (at most [`STOP_GRACE`]).
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        info!(address = %self.addr, "http stopped");
    }
}

/// Accepts connections until `stop`, each served on its own task under the limits in the
/// module docs; then closes the socket and gives in-flight requests [`STOP_GRACE`].
async fn accept_loop(socket: tokio::net::TcpListener, app: axum::Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            a = socket.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait
                // a moment rather than spin.
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(peer = %peer, limit = MAX_CONNECTIONS, "http connection refused: too many connections");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %peer, error = %e, "http connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(socket);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            grace_s = STOP_GRACE.as_secs(),
            "http requests still in flight at the stop; closed"
        );
    }
}
