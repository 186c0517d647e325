//! The query API's routes on the instance's HTTP server: `GET /v1/stores/{store}/keys/{key}`,
//! `GET /v1/stores/{store}/keys`, `GET /v1/metadata`. They answer 503 until the instance has
//! found its topics and started the query service.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::answers::GroupMetadata;
use super::service::{KeyQuery, PageQuery, QueryService, Reply};

/// Where the query service is, once started (the server starts before the instance knows its
/// topics), or why queries are off.
pub(crate) type QuerySlot = Arc<OnceLock<Result<Arc<QueryService>, String>>>;

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            headers.insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

/// Why the query API cannot answer yet, or at all.
enum Unavailable {
    Starting,
    Off(String),
}

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        match self {
            Unavailable::Off(why) => (
                StatusCode::NOT_IMPLEMENTED,
                axum::Json(serde_json::json!({ "error": format!("queries are off: {why}") })),
            )
                .into_response(),
            Unavailable::Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                axum::Json(serde_json::json!({
                    "error": "starting: the instance has not found its topics yet"
                })),
            )
                .into_response(),
        }
    }
}

/// The service, or why there is none.
fn service(slot: &QuerySlot) -> Result<&Arc<QueryService>, Unavailable> {
    match slot.get() {
        Some(Ok(service)) => Ok(service),
        Some(Err(why)) => Err(Unavailable::Off(why.clone())),
        None => Err(Unavailable::Starting),
    }
}

async fn key(
    State(slot): State<QuerySlot>,
    Path((store, key)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
) -> Response {
    match service(&slot) {
        Ok(service) => service.key(&store, &key, query).await.into_response(),
        Err(unavailable) => unavailable.into_response(),
    }
}

async fn keys(
    State(slot): State<QuerySlot>,
    Path(store): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    match service(&slot) {
        Ok(service) => service.keys(&store, query).await.into_response(),
        Err(unavailable) => unavailable.into_response(),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct MetadataQuery {
    /// `local`: what this instance holds; otherwise the whole group.
    scope: Option<String>,
}

async fn metadata(State(slot): State<QuerySlot>, Query(query): Query<MetadataQuery>) -> Response {
    let service = match service(&slot) {
        Ok(service) => service,
        Err(unavailable) => return unavailable.into_response(),
    };
    let directory = service.directory();
    match query.scope.as_deref() {
        Some("local") => axum::Json(directory.local()).into_response(),
        _ => axum::Json::<GroupMetadata>(directory.group()).into_response(),
    }
}

/// The query routes, answering from `slot`'s service once it is set.
pub(crate) fn routes(slot: QuerySlot) -> Router {
    Router::new()
        .route("/v1/stores/{store}/keys/{key}", get(key))
        .route("/v1/stores/{store}/keys", get(keys))
        .route("/v1/metadata", get(metadata))
        .with_state(slot)
}
