//! Asking another instance's query API over HTTP: a forwarded key query, a page of its keys,
//! what it holds. Every call has a deadline; a peer that does not answer in time is treated
//! as unavailable, never waited on.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long a forwarded call may take, connection included.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a peer's answer may hold (a page of keys is the largest).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// A peer's answer: its status, its `Retry-After` (seconds), its body.
#[derive(Debug)]
pub(crate) struct PeerAnswer {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Peers {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Peers {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(PEER_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        }
    }

    /// `GET http://{endpoint}{path_and_query}` (the path already percent-encoded).
    pub(crate) async fn get(
        &self,
        endpoint: &str,
        path_and_query: &str,
    ) -> Result<PeerAnswer, String> {
        let uri: hyper::Uri = format!("http://{endpoint}{path_and_query}")
            .parse()
            .map_err(|e| format!("bad address for {endpoint}: {e}"))?;
        let call = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("{endpoint}: {e}"))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{endpoint}: reading the answer: {e}"))?
                .to_bytes();
            Ok(PeerAnswer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(PEER_TIMEOUT, call)
            .await
            .map_err(|_| format!("{endpoint} did not answer within {PEER_TIMEOUT:?}"))?
    }

    /// Like [`Self::get`], the body read as `T` from a `200 OK`.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        path_and_query: &str,
    ) -> Result<T, String> {
        let answer = self.get(endpoint, path_and_query).await?;
        if answer.status != StatusCode::OK {
            return Err(format!(
                "{endpoint} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| format!("{endpoint}: {e}"))
    }
}
