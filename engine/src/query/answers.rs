//! What the query API answers, as JSON: a key's value and where it came from, a page of keys,
//! and which instance holds each partition; and the paths that ask for them. Public, so that
//! clients (our `query` tool, the local runner, the test suite) ask and read as the server
//! does.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

/// `/v1/stores/{store}/keys/{key}`, each percent-encoded: where a key's value is asked for.
pub fn key_path(store: &str, key: &str) -> String {
    format!("/v1/stores/{}/keys/{}", encode(store), encode(key))
}

/// `/v1/stores/{store}/keys?limit={limit}[&from={from}]`: where a page of keys is asked for
/// (add `&scope=local` for one instance's own).
pub fn keys_path(store: &str, from: Option<&str>, limit: usize) -> String {
    let mut path = format!("/v1/stores/{}/keys?limit={limit}", encode(store));
    if let Some(from) = from {
        path.push_str(&format!("&from={}", encode(from)));
    }
    path
}

/// `GET /v1/stores/{store}/keys/{key}`: the key's value as its task last wrote it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAnswer {
    pub store: String,
    pub key: String,
    /// A number for counts; otherwise a string (the bytes' hex when they are not UTF-8).
    pub value: serde_json::Value,
    pub partition: i32,
    /// The instance that read the value (its query endpoint, or its name when it has none).
    pub answered_by: String,
    /// Whether the partition's owner read it; `false`: a standby, `lag` records behind.
    pub from_owner: bool,
    /// A standby's lag in changelog records (absent for the owner, or until measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// The input offset whose record produced the value, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Whether the instance asked forwarded the query to the one that answered.
    #[serde(default)]
    pub forwarded: bool,
}

/// Any answer but a value: why, and what the instance asked knows of the key's partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// The partition's owner, as the instance that answered knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `GET /v1/stores/{store}/keys?from=&limit=`: entries in key order, and where the next page
/// starts (absent on the last page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysPage {
    pub store: String,
    pub entries: Vec<KeyEntry>,
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub key: String,
    pub value: serde_json::Value,
    pub partition: i32,
}

/// What one instance holds: `GET /v1/metadata?scope=local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    pub instance: String,
    /// Where it answers queries (`None`: it published none, so it cannot be forwarded to).
    pub endpoint: Option<String>,
    /// Partitions it owns: `restoring` or `running` (only `running` ones answer).
    pub active: Vec<HeldPartition>,
    /// Partitions it keeps a standby of, with their lag.
    pub standbys: Vec<HeldPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPartition {
    pub partition: i32,
    /// `created`, `restoring` or `running` for an active task; `standby` for a standby.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
}

/// Who holds one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHolders {
    pub partition: i32,
    /// The member that owns it now (`None`: nobody, e.g. while the group rebalances).
    pub owner: Option<Holder>,
    pub standbys: Vec<Holder>,
}

impl PartitionHolders {
    /// Who holds `partition`, as `instances` say.
    pub fn among<'a>(
        partition: i32,
        instances: impl IntoIterator<Item = &'a InstanceMetadata>,
    ) -> Self {
        let holder = |instance: &InstanceMetadata, held: &HeldPartition| Holder {
            instance: instance.instance.clone(),
            endpoint: instance.endpoint.clone(),
            state: held.state.clone(),
            lag: held.lag,
        };
        let held_in = |list: &'a [HeldPartition]| list.iter().find(|h| h.partition == partition);
        let mut owner = None;
        let mut standbys = Vec::new();
        for instance in instances {
            // Two claims pass by during a hand-over: the running one answers.
            if let Some(held) = held_in(&instance.active) {
                if owner.as_ref().is_none_or(|o: &Holder| o.state != "running") {
                    owner = Some(holder(instance, held));
                }
            }
            if let Some(held) = held_in(&instance.standbys) {
                standbys.push(holder(instance, held));
            }
        }
        Self {
            partition,
            owner,
            standbys,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub instance: String,
    pub endpoint: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
}

/// `GET /v1/metadata`: partition to owner and standbys for the whole group, as this instance
/// last learned it from the other members (at most `age_ms` ago; its own part is current).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMetadata {
    pub partitions: Vec<PartitionHolders>,
    pub instances: Vec<InstanceMetadata>,
    /// Members the broker lists that published no query endpoint, or did not answer.
    pub unreachable_members: usize,
    pub age_ms: u64,
}

impl GroupMetadata {
    /// Builds the partition table from what each instance holds (`partitions` in all).
    pub fn from_instances(
        instances: Vec<InstanceMetadata>,
        partitions: usize,
        unreachable_members: usize,
        age_ms: u64,
    ) -> Self {
        let table = (0..partitions as i32)
            .map(|partition| PartitionHolders::among(partition, &instances))
            .collect();
        Self {
            partitions: table,
            instances,
            unreachable_members,
            age_ms,
        }
    }

    /// Who holds `partition`.
    pub fn holders(&self, partition: i32) -> Option<&PartitionHolders> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}
