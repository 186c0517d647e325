//! Reads an instance's `/status` over HTTP (a short timeout, no retries: the next poll is the
//! retry).

use std::time::Duration;

use anyhow::Context;
use kstreams_engine::status::InstanceView;

const TIMEOUT: Duration = Duration::from_millis(1_000);

/// The instance's `/status`, or why it could not be read.
pub async fn fetch_status(port: u16) -> anyhow::Result<InstanceView> {
    let (status, _, body) =
        crate::http_client::get(&format!("127.0.0.1:{port}"), "/status", TIMEOUT).await?;
    anyhow::ensure!(status.is_success(), "GET /status: {status}");
    serde_json::from_slice(&body).context("parse /status")
}
