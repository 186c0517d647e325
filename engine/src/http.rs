//! The operator's HTTP endpoint: `/metrics` (Prometheus text), `/health/live`, `/health/ready`
//! and `/status` (JSON).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::status::InstanceStatus;

const TEXT: &str = "text/plain; charset=utf-8";

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn check(ok: bool, good: &str, bad: &str) -> Response<Full<Bytes>> {
    match ok {
        true => respond(StatusCode::OK, TEXT, format!("{good}\n")),
        false => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{bad}\n")),
    }
}

fn route(path: &str, metrics: &EngineMetrics, status: &InstanceStatus) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            // The instance gauges are read from its status, the one place it is kept.
            metrics.observe_instance(status);
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            )
        }
        "/status" => respond(StatusCode::OK, "application/json", status.to_json()),
        "/health/live" => check(
            status.is_live(),
            "live",
            "not live: stopped, or the consumer loop is stuck",
        ),
        "/health/ready" => check(
            status.is_ready(),
            "ready",
            "not ready: joining the group or restoring",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics, /status, /health/live, /health/ready\n".into(),
        ),
    }
}

/// Binds `address` and serves in the background. Returns the bound address (useful with port 0).
pub async fn serve(
    address: SocketAddr,
    metrics: EngineMetrics,
    status: Arc<InstanceStatus>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let server_error = |source| EngineError::MetricsServer {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(server_error)?;
    let bound = listener.local_addr().map_err(server_error)?;
    info!("metrics on http://{bound}/metrics, status on /status, probes on /health/live and /health/ready");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, status) = (metrics.clone(), status.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = route(request.uri().path(), &metrics, &status);
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok((bound, server))
}
