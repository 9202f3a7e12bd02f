//! The routes the listener serves and the state they share. A new route (issue 13's
//! notifications and `/v1/refunds`) is one `.route(..)` line in [`router`] and, if it needs
//! more than the running daemon's view, one field in [`AppState`].
//!
//! - `GET /metrics`: the Prometheus exposition ([`crate::metrics`]), OpenMetrics text.
//! - `GET /healthz`: 200 while the work loop ticked within twice its sweep interval, else 503
//!   (a load balancer's liveness check).
//! - `POST http.notify_path` (default `/checus/refund-notify`): Checus refund result
//!   notifications ([`super::notify`]).
//! - `GET /readyz`: 200 while the ledger is readable, the lock is held, querying is not halted
//!   and the breaker is closed; else 503 with the reasons as the stable codes `status --json`
//!   uses (a load balancer's readiness check).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use super::{BODY_LIMIT, REQUEST_TIMEOUT};
use crate::daemon::{Live, NotReady};

/// What every handler can reach; cloned per request (an `Arc` each).
#[derive(Clone)]
pub struct AppState {
    /// The running daemon's view: metrics, loop ticks, findings, lock and ledger checks.
    pub live: Arc<Live>,
}

/// The listener's router: the routes, their state, and the body cap and timeouts.
pub fn router(state: AppState) -> Router {
    let notify_path = state.live.inbox().path().to_owned();
    Router::new()
        .route(&notify_path, post(super::notify::receive))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(super::api::routes())
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(RequestBodyTimeoutLayer::new(REQUEST_TIMEOUT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let page = s.live.metrics_page().await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], page).into_response()
}

/// `/healthz`'s body.
#[derive(Serialize)]
struct HealthBody {
    /// "ok" or "stalled".
    status: &'static str,
    /// Seconds since the work loop last ticked.
    last_tick_s: f64,
    /// The limit: twice the sweep interval, in seconds.
    limit_s: f64,
}

async fn healthz(State(s): State<AppState>) -> Response {
    let h = s.live.health();
    let (code, status) = if h.is_healthy() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled")
    };
    let body = HealthBody {
        status,
        last_tick_s: h.since_tick.as_secs_f64(),
        limit_s: h.limit.as_secs_f64(),
    };
    (code, Json(body)).into_response()
}

/// `/readyz`'s body.
#[derive(Serialize)]
struct ReadyBody {
    /// True with 200, false with 503.
    ready: bool,
    /// Why not, each with its stable code; empty when ready.
    reasons: Vec<NotReady>,
}

async fn readyz(State(s): State<AppState>) -> Response {
    let reasons = s.live.readiness().await;
    let ready = reasons.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ReadyBody { ready, reasons })).into_response()
}
