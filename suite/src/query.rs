//! Asking instances' query API from tests: a key's answer, a page of keys, the group's
//! metadata, each typed with the engine's own answer types.

use kstreams_engine::{key_path, keys_path, GroupMetadata, KeyAnswer, KeysPage};

use crate::app::{http_get, App};

/// A key query's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Queried {
    Value(KeyAnswer),
    /// 404, with why: the store has no value for the key, or there is no such store.
    NotFound(String),
    /// 503: restoring or moving; asked again later.
    Unavailable(String),
    /// Anything else (or no answer at all), with the status and body.
    Other(Option<u16>, String),
}

/// `GET /v1/stores/{store}/keys/{key}` on the instance serving HTTP on `port`; `stale`: a
/// standby's answer is accepted.
pub fn query_key(port: u16, store: &str, key: &str, stale: bool) -> Queried {
    let path = format!("{}?stale={stale}", key_path(store, key));
    match http_get(port, &path) {
        Some((200, body)) => match serde_json::from_str(&body) {
            Ok(answer) => Queried::Value(answer),
            Err(e) => Queried::Other(Some(200), format!("{e}: {body}")),
        },
        Some((404, body)) => Queried::NotFound(body),
        Some((503, body)) => Queried::Unavailable(body),
        Some((status, body)) => Queried::Other(Some(status), body),
        None => Queried::Other(None, "no answer".into()),
    }
}

impl App {
    /// A key's answer from this instance (which forwards to the owner).
    pub fn query(&self, store: &str, key: &str) -> Queried {
        query_key(self.metrics_port, store, key, false)
    }

    /// A key's answer from this instance, a standby's accepted (KIP-535).
    pub fn query_stale(&self, store: &str, key: &str) -> Queried {
        query_key(self.metrics_port, store, key, true)
    }

    /// A page of the group's keys (or this instance's, `local`), from `from` on.
    pub fn keys_page(
        &self,
        store: &str,
        from: Option<&str>,
        limit: usize,
        local: bool,
    ) -> Result<KeysPage, String> {
        let mut path = keys_path(store, from, limit);
        if local {
            path.push_str("&scope=local");
        }
        match self.http_get(&path) {
            Some((200, body)) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            other => Err(format!("{other:?}")),
        }
    }

    /// `/v1/metadata`, typed.
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        match self.http_get("/v1/metadata")? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }
}
