//! The instance's HTTP server: the operator's endpoints (`/metrics` in Prometheus text,
//! `/health/live`, `/health/ready`, `/status` as JSON) and the query API (`/v1/...`), routed by
//! axum and served on hyper with a deadline on slow request headers and on every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::query::{self, QuerySlot};
use crate::status::InstanceStatus;

/// How long a client may take to send a request's headers (a slow or stalled client holds a
/// connection no longer than this).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any request may take to answer (a query forwarded to an unresponsive owner gives
/// up well before this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long accepting pauses after an error (no file descriptors left, say), instead of
/// spinning on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

const TEXT: &str = "text/plain; charset=utf-8";

#[derive(Clone)]
struct Operator {
    metrics: EngineMetrics,
    status: Arc<InstanceStatus>,
}

fn check(ok: bool, good: &str, bad: &str) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = if ok { good } else { bad };
    (status, [(header::CONTENT_TYPE, TEXT)], format!("{body}\n")).into_response()
}

async fn metrics(State(operator): State<Operator>) -> Response {
    // The instance gauges are read from its status, the one place it is kept.
    operator.metrics.observe_instance(&operator.status);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        operator.metrics.render(),
    )
        .into_response()
}

async fn status(State(operator): State<Operator>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        operator.status.to_json(),
    )
        .into_response()
}

async fn live(State(operator): State<Operator>) -> Response {
    check(
        operator.status.is_live(),
        "live",
        "not live: stopped, or the consumer loop is stuck",
    )
}

async fn ready(State(operator): State<Operator>) -> Response {
    check(
        operator.status.is_ready(),
        "ready",
        "not ready: joining the group or restoring",
    )
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, TEXT)],
        "not found; try /metrics, /status, /health/live, /health/ready, /v1/metadata, \
         /v1/stores/{store}/keys/{key}\n",
    )
        .into_response()
}

/// Every route: wrong methods answer 405, unknown paths 404.
fn router(operator: Operator, queries: QuerySlot) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(operator)
        .merge(query::routes(queries))
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
}

/// Binds `address` and serves in the background; the query API answers once `queries` is set.
/// Returns the bound address (useful with port 0).
pub async fn serve(
    address: SocketAddr,
    metrics: EngineMetrics,
    status: Arc<InstanceStatus>,
    queries: QuerySlot,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let server_error = |source| EngineError::MetricsServer {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(server_error)?;
    let bound = listener.local_addr().map_err(server_error)?;
    info!(
        "metrics on http://{bound}/metrics, status on /status, probes on /health/live and \
         /health/ready, queries on /v1/metadata and /v1/stores/<store>/keys/<key>"
    );
    let service = TowerToHyperService::new(router(Operator { metrics, status }, queries));
    let server = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(
                        "HTTP server: accepting a connection: {e}; pausing {ACCEPT_ERROR_PAUSE:?}"
                    );
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let service = service.clone();
            tokio::spawn(async move {
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!("HTTP connection: {e}");
                }
            });
        }
    });
    Ok((bound, server))
}
