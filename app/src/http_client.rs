//! One HTTP GET to an instance (hyper's client connection: one request per connection, a
//! deadline, no retries of its own): the local runner's status polls and the query tool.

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `GET path` on `authority` (`host:port`) within `timeout`: the status, `Retry-After` in
/// seconds if given, and the body.
pub async fn get(
    authority: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Option<u64>, Bytes)> {
    let call = async {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connect to {authority}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header("host", authority)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, retry_after, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .with_context(|| format!("GET http://{authority}{path}: no answer within {timeout:?}"))?
}
