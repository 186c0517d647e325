//! Reads an instance's `/status` over HTTP (hyper's client connection: one request per
//! connection, a short timeout, no retries: the next poll is the retry).

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use kstreams_engine::status::InstanceView;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_millis(1_000);

/// The instance's `/status`, or why it could not be read.
pub async fn fetch_status(port: u16) -> anyhow::Result<InstanceView> {
    let body = tokio::time::timeout(TIMEOUT, get(port, "/status"))
        .await
        .context("timed out")??;
    serde_json::from_slice(&body).context("parse /status")
}

async fn get(port: u16, path: &str) -> anyhow::Result<Bytes> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    Ok(response.into_body().collect().await?.to_bytes())
}
