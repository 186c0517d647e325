//! Answering a query: a key's partition, read from this instance's store when it owns the
//! partition and the task runs, else forwarded to the owner; a page of keys merged across the
//! group; the group's metadata. Never a value from a task that is restoring or has moved: those
//! answer 503 with `Retry-After`, and a standby answers only when the query accepts staleness.

use std::sync::Arc;

use hyper::body::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::answers::{key_path, keys_path, ErrorAnswer, KeyAnswer, KeyEntry, KeysPage};
use super::directory::GroupDirectory;
use super::partitioner::KeyPartitioner;
use super::peers::Peers;
use crate::dsl::{StoreValues, Topology};
use crate::status::{InstanceStatus, TaskPhase};
use crate::store::{ReadError, StoreReader, StoredValue};
use crate::task_id::TaskId;

/// The most entries one page of keys may hold.
pub const MAX_PAGE: usize = 10_000;
/// Entries in a page of keys unless the query says.
pub const DEFAULT_PAGE: usize = 100;
/// What a 503 tells the client to wait before asking again, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

/// An answer to send: its status, its JSON body, and whether to say when to retry.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    pub retry_after: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, body: &impl Serialize) -> Self {
        let body = serde_json::to_vec(body).expect("answers serialize");
        let retry_after =
            (status == StatusCode::SERVICE_UNAVAILABLE).then(|| RETRY_AFTER_SECONDS.to_string());
        Self {
            status,
            body: body.into(),
            retry_after,
        }
    }

    fn error(
        status: StatusCode,
        error: String,
        partition: Option<i32>,
        owner: Option<String>,
    ) -> Self {
        Self::json(
            status,
            &ErrorAnswer {
                error,
                partition,
                owner,
            },
        )
    }
}

/// How a key query was asked.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub(crate) struct KeyQuery {
    /// Another instance forwarded it: answer from here or not at all (no second hop).
    #[serde(default)]
    pub forwarded: bool,
    /// A standby may answer, stating its lag (KIP-535), when the owner cannot.
    #[serde(default)]
    pub stale: bool,
}

/// How a page of keys was asked.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct PageQuery {
    pub from: Option<String>,
    pub limit: Option<usize>,
    /// `local`: this instance's keys only; `all` (the default): the whole group's.
    pub scope: Option<String>,
}

pub(crate) struct QueryService {
    pub status: Arc<InstanceStatus>,
    pub topology: Arc<Topology>,
    /// The input producers' partitioner, which put each key where it is counted.
    pub partitioner: KeyPartitioner,
    /// The input topic's partitions.
    pub partitions: usize,
    pub directory: Arc<GroupDirectory>,
    pub peers: Peers,
}

/// Renders a stored value as its store's values read.
fn render(values: StoreValues, bytes: &[u8]) -> serde_json::Value {
    match values {
        StoreValues::I64 => match <[u8; 8]>::try_from(bytes) {
            Ok(array) => i64::from_be_bytes(array).into(),
            Err(_) => hex(bytes).into(),
        },
        StoreValues::Bytes => match std::str::from_utf8(bytes) {
            Ok(text) => text.into(),
            Err(_) => hex(bytes).into(),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl QueryService {
    pub(crate) fn directory(&self) -> &GroupDirectory {
        &self.directory
    }

    fn store_values(&self, store: &str) -> Result<StoreValues, Reply> {
        self.topology.store_values(store).ok_or_else(|| {
            Reply::error(
                StatusCode::NOT_FOUND,
                format!(
                    "no store named `{store}`; this application's stores: {}",
                    self.topology.stores().join(", ")
                ),
                None,
                None,
            )
        })
    }

    /// `GET /v1/stores/{store}/keys/{key}`.
    pub(crate) async fn key(&self, store: &str, key: &str, query: KeyQuery) -> Reply {
        let values = match self.store_values(store) {
            Ok(values) => values,
            Err(reply) => return reply,
        };
        let partition = self.partitioner.partition(key.as_bytes(), self.partitions);
        let task = TaskId::new(0, partition);
        let me = self.directory.me().name().to_string();
        let read = |reader: StoreReader, from_owner: bool, lag: Option<i64>| {
            let owner = from_owner.then(|| me.clone());
            match reader.get(store, key.as_bytes()) {
                Ok(Some(StoredValue { version, value })) => Reply::json(
                    StatusCode::OK,
                    &KeyAnswer {
                        store: store.to_string(),
                        key: key.to_string(),
                        value: render(values, &value),
                        partition,
                        answered_by: me.clone(),
                        from_owner,
                        lag,
                        version,
                        forwarded: false,
                    },
                ),
                Ok(None) => Reply::error(
                    StatusCode::NOT_FOUND,
                    format!("store `{store}` has no value for this key"),
                    Some(partition),
                    owner,
                ),
                Err(ReadError::Closed) => Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("partition {partition} is moving away from this instance"),
                    Some(partition),
                    None,
                ),
                Err(e) => Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string(),
                    Some(partition),
                    owner,
                ),
            }
        };
        if let Some(progress) = self.status.task(task) {
            return match (progress.phase(), progress.store.get()) {
                (TaskPhase::Running, Some(reader)) => read(reader, true, None),
                (phase, _) => Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("partition {partition} is {phase} on its owner, this instance"),
                    Some(partition),
                    Some(me),
                ),
            };
        }
        let standby = || {
            let progress = self.status.standby(task)?;
            Some((progress.store.get()?, progress.lag()))
        };
        if query.stale {
            if let Some((reader, lag)) = standby() {
                return read(reader, false, lag);
            }
        }
        if query.forwarded {
            return Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("partition {partition} is not held here (it moved)"),
                Some(partition),
                None,
            );
        }
        let holders = self.directory.others_holding(partition);
        let owner = holders
            .owner
            .as_ref()
            .and_then(|o| o.endpoint.clone())
            .filter(|endpoint| *endpoint != me);
        let path = format!(
            "{}?forwarded=true&stale={}",
            key_path(store, key),
            query.stale
        );
        let mut reasons = Vec::new();
        match &owner {
            Some(owner) => match self.forward(owner, &path).await {
                Ok(reply) if reply.status != StatusCode::SERVICE_UNAVAILABLE || !query.stale => {
                    return reply
                }
                Ok(reply) => reasons.push(String::from_utf8_lossy(&reply.body).into_owned()),
                Err(e) => {
                    self.directory.wake();
                    reasons.push(e);
                }
            },
            None => {
                self.directory.wake();
                reasons.push(format!("no instance owns partition {partition} now"));
            }
        }
        if query.stale {
            for endpoint in holders
                .standbys
                .iter()
                .filter_map(|s| s.endpoint.as_deref())
            {
                if endpoint == me {
                    continue;
                }
                match self.forward(endpoint, &path).await {
                    Ok(reply) if reply.status != StatusCode::SERVICE_UNAVAILABLE => return reply,
                    Ok(_) => {}
                    Err(e) => reasons.push(e),
                }
            }
        }
        Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            reasons.join("; "),
            Some(partition),
            owner,
        )
    }

    /// Asks `endpoint` and relays its answer, marked as forwarded.
    async fn forward(&self, endpoint: &str, path: &str) -> Result<Reply, String> {
        let answer = self.peers.get(endpoint, path).await?;
        let body = match serde_json::from_slice::<KeyAnswer>(&answer.body) {
            Ok(mut value) if answer.status == StatusCode::OK => {
                value.forwarded = true;
                serde_json::to_vec(&value)
                    .expect("answers serialize")
                    .into()
            }
            _ => answer.body,
        };
        Ok(Reply {
            status: answer.status,
            body,
            retry_after: answer.retry_after,
        })
    }

    /// `GET /v1/stores/{store}/keys`: this instance's running tasks' keys, or the group's.
    pub(crate) async fn keys(&self, store: &str, query: PageQuery) -> Reply {
        let values = match self.store_values(store) {
            Ok(values) => values,
            Err(reply) => return reply,
        };
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                format!("limit must be 1 to {MAX_PAGE}"),
                None,
                None,
            );
        }
        let from = query.from.as_deref();
        let page = match query.scope.as_deref().unwrap_or("all") {
            "local" => self.local_keys(store, values, from, limit),
            "all" => self.group_keys(store, values, from, limit).await,
            other => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    format!("scope `{other}` is neither `local` nor `all`"),
                    None,
                    None,
                )
            }
        };
        match page {
            Ok(page) => Reply::json(StatusCode::OK, &page),
            Err(reply) => reply,
        }
    }

    fn local_keys(
        &self,
        store: &str,
        values: StoreValues,
        from: Option<&str>,
        limit: usize,
    ) -> Result<KeysPage, Reply> {
        let mut entries = Vec::new();
        for (task, progress) in self.status.task_progress() {
            let (TaskPhase::Running, Some(reader)) = (progress.phase(), progress.store.get())
            else {
                continue;
            };
            let read = reader.range(store, from.map(str::as_bytes), limit + 1);
            let read = read.map_err(|e| {
                Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("task {task}: {e}"),
                    Some(task.partition),
                    None,
                )
            })?;
            entries.extend(read.into_iter().map(|(key, stored)| KeyEntry {
                key: String::from_utf8_lossy(&key).into_owned(),
                value: render(values, &stored.value),
                partition: task.partition,
            }));
        }
        Ok(page_of(store, entries, limit))
    }

    async fn group_keys(
        &self,
        store: &str,
        values: StoreValues,
        from: Option<&str>,
        limit: usize,
    ) -> Result<KeysPage, Reply> {
        let group = self.directory.group();
        if let Some(missing) = group
            .partitions
            .iter()
            .find(|p| p.owner.as_ref().is_none_or(|o| o.state != "running"))
        {
            self.directory.wake();
            return Err(Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "partition {} has no running owner now: a page would miss its keys",
                    missing.partition
                ),
                Some(missing.partition),
                None,
            ));
        }
        let me = self.directory.me().name().to_string();
        let path = keys_path(store, from, limit) + "&scope=local";
        let others: Vec<String> = group
            .instances
            .iter()
            .filter(|i| !i.active.is_empty())
            .filter_map(|i| i.endpoint.clone())
            .filter(|endpoint| *endpoint != me)
            .collect();
        let mut entries = self.local_keys(store, values, from, limit)?.entries;
        let asked = others
            .iter()
            .map(|endpoint| self.peers.get_json::<KeysPage>(endpoint, &path));
        for answer in futures::future::join_all(asked).await {
            let page = answer.map_err(|e| {
                self.directory.wake();
                Reply::error(StatusCode::SERVICE_UNAVAILABLE, e, None, None)
            })?;
            entries.extend(page.entries);
        }
        // Every partition's owner answered for its own keys only.
        Ok(page_of(store, entries, limit))
    }
}

/// The first `limit` of `entries` in key order, and where the next page starts.
fn page_of(store: &str, mut entries: Vec<KeyEntry>, limit: usize) -> KeysPage {
    entries.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    let next = entries.get(limit).map(|entry| entry.key.clone());
    entries.truncate(limit);
    KeysPage {
        store: store.to_string(),
        entries,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, partition: i32) -> KeyEntry {
        KeyEntry {
            key: key.into(),
            value: 1.into(),
            partition,
        }
    }

    #[test]
    fn a_page_merges_partitions_in_key_order_and_says_where_the_next_starts() {
        let entries = vec![entry("b", 0), entry("d", 0), entry("a", 1), entry("c", 1)];
        let page = page_of("s", entries.clone(), 3);
        let keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(page.next.as_deref(), Some("d"));
        assert_eq!(page_of("s", entries, 4).next, None);
    }

    #[test]
    fn counts_read_as_numbers_and_other_values_as_text_or_hex() {
        assert_eq!(
            render(StoreValues::I64, &42i64.to_be_bytes()),
            serde_json::json!(42)
        );
        assert_eq!(render(StoreValues::Bytes, b"hi"), serde_json::json!("hi"));
        assert_eq!(
            render(StoreValues::Bytes, &[0xff, 0x01]),
            serde_json::json!("ff01")
        );
    }
}
