//! The operator's HTTP endpoint: `/metrics` (Prometheus text), `/health/live`, `/health/ready`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What the health endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the consumer has received its first assignment.
    pub joined: AtomicBool,
    /// Cleared when the engine stops for good.
    pub alive: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self {
            joined: AtomicBool::new(false),
            alive: AtomicBool::new(true),
        }
    }

    /// Ready: in the group, and no assigned task is still restoring.
    pub fn is_ready(&self, metrics: &EngineMetrics) -> bool {
        self.alive.load(Ordering::Relaxed)
            && self.joined.load(Ordering::Relaxed)
            && metrics.tasks_restoring.get() == 0
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn route(path: &str, metrics: &EngineMetrics, health: &Health) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/health/live" if health.alive.load(Ordering::Relaxed) => {
            respond(StatusCode::OK, text, "live\n".into())
        }
        "/health/live" => respond(StatusCode::SERVICE_UNAVAILABLE, text, "stopped\n".into()),
        "/health/ready" if health.is_ready(metrics) => {
            respond(StatusCode::OK, text, "ready\n".into())
        }
        "/health/ready" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "not ready: joining or restoring\n".into(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            text,
            "not found; try /metrics, /health/live, /health/ready\n".into(),
        ),
    }
}

/// Binds `address` and serves in the background. Returns the bound address (useful with port 0).
pub async fn serve(
    address: SocketAddr,
    metrics: EngineMetrics,
    health: Arc<Health>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener =
        TcpListener::bind(address)
            .await
            .map_err(|source| EngineError::MetricsServer {
                address: address.to_string(),
                source,
            })?;
    let bound = listener
        .local_addr()
        .map_err(|source| EngineError::MetricsServer {
            address: address.to_string(),
            source,
        })?;
    info!("metrics and health on http://{bound}/metrics");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = route(request.uri().path(), &metrics, &health);
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
