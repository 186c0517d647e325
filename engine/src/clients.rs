//! Every Kafka client's configuration (main consumer, task producers, restore consumer, admin),
//! built in one place: the engine's keys, then the user's client settings (file, environment,
//! `-X`), with the keys the engine's guarantees rest on protected.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::client_settings::{is_secret, ClientSetting, ClientSettings};
use crate::config::{GroupProtocol, StreamsConfig, ENDPOINT_SEPARATOR};
use crate::error::{EngineError, Result};
use crate::memory_budget::ClientMemorySettings;
use crate::task_id::TaskId;

/// Bytes per partition per fetch, for the input consumer. Smaller than librdkafka's 1 MiB
/// default: on brokers that answer in time proportional to the records returned (tansu), large
/// fetches stall; on Kafka 256 KiB per round trip still restores at hundreds of MB/s.
const FETCH_BYTES: &str = "262144";
/// Bytes per changelog partition per restore fetch while tasks process beside the restore:
/// smaller than the input's, so that a restore, which reads as fast as the broker answers,
/// leaves room on the broker for the instance's input fetches and produce requests.
const RESTORE_FETCH_BYTES_BESIDE: &str = "49152";
/// Bytes per changelog partition per restore fetch while nothing processes on the instance
/// (every task restoring, as after a lost volume): nobody waits behind a large fetch, so the
/// restore reads as the input consumer does. 1 MiB restored no faster on tansu (1M records:
/// 28.6 s against 28.2 s) and raised the restore's peak RSS from 124 to 194 MiB.
const RESTORE_FETCH_BYTES_ALONE: &str = FETCH_BYTES;
/// How long a consumer waits before fetching a partition again once its prefetch budget is
/// full. librdkafka's default (1 s) suits a prefetch of 100,000 records per partition; with
/// the budget's thousands, a restore fetched ahead only a few steps and then stood still a
/// second at a time (a 1M-record restore went from 100 s to over 180 s on tansu).
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// How large a restore consumer's fetches are: small while tasks process beside the restore,
/// large while the restore has the instance to itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreFetch {
    Beside,
    Alone,
}

/// Which client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// The group member that reads the source topic.
    Consumer,
    /// A task's producer (changelog and output records).
    Producer(TaskId),
    /// Reads changelogs while tasks restore; never joins the group.
    Restore(RestoreFetch),
    /// Metadata lookups and topic creation.
    Admin,
}

impl ClientRole {
    fn client_id(self, config: &StreamsConfig) -> String {
        let application_id = &config.application_id;
        match self {
            // The instance's name, so that `kafka-consumer-groups --describe` tells members
            // apart, and where it answers queries, for the other members (see `group_members`).
            ClientRole::Consumer => {
                let name = format!("{application_id}-{}-consumer", config.instance_name());
                match &config.application_server {
                    Some(endpoint) => format!("{name}{ENDPOINT_SEPARATOR}{endpoint}"),
                    None => name,
                }
            }
            ClientRole::Producer(task) => format!("{application_id}-{task}-producer"),
            ClientRole::Restore(RestoreFetch::Beside) => format!("{application_id}-restore"),
            ClientRole::Restore(RestoreFetch::Alone) => format!("{application_id}-restore-alone"),
            ClientRole::Admin => format!("{application_id}-admin"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ClientRole::Consumer => "consumer",
            ClientRole::Producer(_) => "producer",
            ClientRole::Restore(_) => "restore consumer",
            ClientRole::Admin => "admin client",
        }
    }

    fn consumes(self) -> bool {
        matches!(self, ClientRole::Consumer | ClientRole::Restore(_))
    }
}

/// A key the engine sets itself, with why a user may not give another value.
struct OwnedKey {
    key: &'static str,
    why: &'static str,
}

/// Keys on every client.
const OWNED_BY_ENGINE: &[OwnedKey] = &[
    OwnedKey {
        key: "bootstrap.servers",
        why: "set it with --broker / KAFKA_BROKER",
    },
    OwnedKey {
        key: "client.id",
        why: "the engine names each client (<application-id>-<instance>-consumer@<application \
              server>, -<task>-producer, -restore, -admin), so that quotas and ACLs can tell them \
              apart and the group's members find each other's query endpoints",
    },
    OwnedKey {
        key: "allow.auto.create.topics",
        why: "a metadata lookup must never create a topic (a changelog made that way is not \
              compacted and loses state)",
    },
];

/// Keys on the consumers (main and restore).
const OWNED_ON_CONSUMERS: &[OwnedKey] = &[
    OwnedKey {
        key: "queued.max.messages.kbytes",
        why: "the memory budget sets it; use --input-prefetch-bytes and --restore-prefetch-bytes",
    },
    OwnedKey {
        key: "queued.min.messages",
        why: "the memory budget sets it; use --input-prefetch-bytes and --restore-prefetch-bytes",
    },
    OwnedKey {
        key: "group.id",
        why: "the group id is the application id; set it with --application-id",
    },
    OwnedKey {
        key: "group.instance.id",
        why: "set it with --group-instance-id",
    },
    OwnedKey {
        key: "session.timeout.ms",
        why: "set it with --session-timeout-ms",
    },
    OwnedKey {
        key: "enable.auto.commit",
        why: "offsets are committed only with the state they produced",
    },
    OwnedKey {
        key: "enable.auto.offset.store",
        why: "offsets are committed only with the state they produced",
    },
    OwnedKey {
        key: "partition.assignment.strategy",
        why: "task hand-over relies on cooperative rebalancing",
    },
    OwnedKey {
        key: "group.protocol",
        why: "set it with --group-protocol",
    },
    OwnedKey {
        key: "isolation.level",
        why: "only committed records are read, as in Kafka Streams",
    },
    OwnedKey {
        key: "enable.partition.eof",
        why: "the engine decides where it needs end-of-partition events",
    },
];

/// How long the broker lets a task's transaction stay open before it aborts it and fences the
/// producer: longer than a commit may take (its deadline) plus a commit interval's processing
/// before it, so only a task that stopped committing is aborted.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(90);

/// A task's `transactional.id` under exactly-once: the same for every owner of the task, so a
/// new owner's producer fences the old one's (its open transaction is aborted, its later
/// sends and commits refused).
pub(crate) fn transactional_id(config: &StreamsConfig, task: TaskId) -> String {
    format!("{}-{task}", config.application_id)
}

/// Keys on the producers.
const OWNED_ON_PRODUCERS: &[OwnedKey] = &[
    OwnedKey {
        key: "queue.buffering.max.kbytes",
        why: "the memory budget sets it; use --producer-buffer-bytes-per-task",
    },
    OwnedKey {
        key: "queue.buffering.max.messages",
        why: "the memory budget sets it; use --producer-buffer-bytes-per-task",
    },
    OwnedKey {
        key: "enable.idempotence",
        why: "changelog records must not be duplicated or reordered by retries",
    },
    OwnedKey {
        key: "acks",
        why: "state is written only after every in-sync replica has its changelog records",
    },
    OwnedKey {
        key: "transactional.id",
        why: "under --processing-guarantee exactly_once_v2 each task's producer has its own (<application id>-<task id>)",
    },
    OwnedKey {
        key: "transaction.timeout.ms",
        why: "the engine sets it above its commit deadline",
    },
];

/// The engine's own settings for `role`, before the user's.
fn engine_settings(config: &StreamsConfig, role: ClientRole) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("bootstrap.servers", config.bootstrap_servers.clone()),
        ("client.id", role.client_id(config)),
        ("allow.auto.create.topics", "false".into()),
    ];
    let session_timeout = config.session_timeout.as_millis().to_string();
    match role {
        ClientRole::Consumer => {
            settings.extend([
                ("group.id", config.group_id().to_string()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                ("isolation.level", "read_committed".into()),
                ("enable.partition.eof", "false".into()),
                ("auto.offset.reset", "earliest".into()),
                ("statistics.interval.ms", "5000".into()),
                ("max.partition.fetch.bytes", FETCH_BYTES.into()),
                ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.into()),
            ]);
            match config.group_protocol {
                GroupProtocol::Classic => settings.extend([
                    ("partition.assignment.strategy", "cooperative-sticky".into()),
                    ("session.timeout.ms", session_timeout),
                ]),
                // The broker assigns (incrementally, as cooperative rebalancing does) and owns
                // the session timeout: librdkafka refuses either setting under this protocol.
                GroupProtocol::Consumer => settings.push(("group.protocol", "consumer".into())),
            }
            settings.extend(ClientMemorySettings::prefetch_limits(
                config.client_memory.input_prefetch_bytes,
                config.source_partitions,
            ));
            if let Some(id) = &config.group_instance_id {
                settings.push(("group.instance.id", id.clone()));
            }
        }
        ClientRole::Restore(fetch) => {
            let fetch_bytes = match fetch {
                RestoreFetch::Beside => RESTORE_FETCH_BYTES_BESIDE,
                RestoreFetch::Alone => RESTORE_FETCH_BYTES_ALONE,
            };
            settings.extend([
                // Same group id, but never subscribed: it only reads the group's committed offsets.
                ("group.id", config.group_id().to_string()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                ("isolation.level", "read_committed".into()),
                ("enable.partition.eof", "true".into()),
                ("auto.offset.reset", "earliest".into()),
                ("fetch.wait.max.ms", "100".into()),
                ("max.partition.fetch.bytes", fetch_bytes.into()),
                ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.into()),
                // Never used (the consumer never joins), but librdkafka checks settings such as
                // max.poll.interval.ms against it.
                ("session.timeout.ms", session_timeout),
            ]);
            settings.extend(ClientMemorySettings::prefetch_limits(
                config.client_memory.restore_prefetch_bytes,
                config.source_partitions,
            ));
        }
        ClientRole::Producer(task) => {
            if config.processing_guarantee.exactly_once() {
                settings.extend([
                    ("transactional.id", transactional_id(config, task)),
                    (
                        "transaction.timeout.ms",
                        TRANSACTION_TIMEOUT.as_millis().to_string(),
                    ),
                ]);
            }
            settings.extend([
                ("enable.idempotence", "true".into()),
                ("acks", "all".into()),
                ("compression.type", "lz4".into()),
                ("linger.ms", "5".into()),
                // Output records are partitioned by key as Java producers do (the user's
                // settings may choose another partitioner).
                ("partitioner", KEY_PARTITIONER.into()),
            ]);
            // librdkafka's default (1 GiB and 100,000 records per producer, one producer per
            // task) would let memory grow with the broker's backlog.
            settings.extend(config.client_memory.producer_limits());
        }
        ClientRole::Admin => {}
    }
    settings
}

fn owned_keys(role: ClientRole) -> impl Iterator<Item = &'static OwnedKey> {
    let role_keys: &'static [OwnedKey] = match role {
        ClientRole::Consumer | ClientRole::Restore(_) => OWNED_ON_CONSUMERS,
        ClientRole::Producer(_) => OWNED_ON_PRODUCERS,
        ClientRole::Admin => &[],
    };
    OWNED_BY_ENGINE.iter().chain(role_keys)
}

impl StreamsConfig {
    /// Checks every setting, the engine's and the clients'; the error names the first one that
    /// is wrong and why. (Here rather than in `config`, which the client configurations build
    /// on.)
    pub fn validate(&self) -> Result<()> {
        self.validate_engine_settings()?;
        validate_client_settings(self)
    }
}

/// Checks the user's client settings against what the engine owns, for every kind of client:
/// a protected key with another value than the engine's is an error naming the key, where it
/// was set and why. Then has librdkafka check every key and value (unknown keys, bad values,
/// features not compiled in), without connecting.
pub fn validate_client_settings(config: &StreamsConfig) -> Result<()> {
    let roles = [
        ClientRole::Consumer,
        ClientRole::Restore(RestoreFetch::Beside),
        ClientRole::Restore(RestoreFetch::Alone),
        ClientRole::Producer(TaskId::new(0, 0)),
        ClientRole::Admin,
    ];
    for role in roles {
        let engine = engine_settings(config, role);
        for owned in owned_keys(role) {
            let Some(given) = config.client_settings.get(owned.key) else {
                continue;
            };
            let engine_value = engine.iter().find(|(k, _)| *k == owned.key).map(|(_, v)| v);
            if engine_value != Some(&given.value) {
                return Err(EngineError::ClientSetting {
                    key: given.key.clone(),
                    source_of_setting: given.source.to_string(),
                    reason: format!(
                        "the engine sets it{} for the {}: {}",
                        engine_value
                            .map(|v| format!(" to `{v}`"))
                            .unwrap_or_default(),
                        role.name(),
                        owned.why
                    ),
                });
            }
        }
        client_config(config, role)
            .create_native_config()
            .map_err(|e| setting_error(&config.client_settings, e))?;
    }
    Ok(())
}

/// The configuration of one client: the engine's settings, then the user's (which may not
/// change a protected key: [`validate_client_settings`] refuses that at start-up, and the
/// engine's value is applied last here as well).
pub fn client_config(config: &StreamsConfig, role: ClientRole) -> ClientConfig {
    let mut client = ClientConfig::new();
    let engine = engine_settings(config, role);
    for (key, value) in &engine {
        client.set(*key, value);
    }
    for setting in config.client_settings.effective() {
        if !role.consumes()
            && CONSUMER_ONLY_PREFIXES
                .iter()
                .any(|p| setting.key.starts_with(p))
        {
            continue;
        }
        client.set(&setting.key, &setting.value);
    }
    for owned in owned_keys(role) {
        if let Some((key, value)) = engine.iter().find(|(k, _)| *k == owned.key) {
            client.set(*key, value);
        }
    }
    client
}

/// Consumer settings that librdkafka warns about on a producer; not given to producers and
/// the admin client.
const CONSUMER_ONLY_PREFIXES: &[&str] = &[
    "auto.offset.reset",
    "fetch.",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "heartbeat.interval.ms",
    "queued.",
    "check.crcs",
];

/// The partitioner of Kafka's Java clients (murmur2 of the key; keyless records spread at
/// random), which Kafka Streams, the console producer and every Java producer use: a key then
/// lands on the same partition whichever of them wrote it. librdkafka's own default
/// (`consistent_random`, CRC32) would put it elsewhere. Every producer of the engine and its
/// tools uses it unless the user's client settings choose another (`-X partitioner=...`).
pub const KEY_PARTITIONER: &str = "murmur2_random";

/// Sets [`KEY_PARTITIONER`] on a producer's configuration unless it names a partitioner.
pub fn default_key_partitioner(config: &mut ClientConfig) -> &mut ClientConfig {
    if config.get("partitioner").is_none() {
        config.set("partitioner", KEY_PARTITIONER);
    }
    config
}

/// A console tool's client (producer, consumer, admin): the broker, then the user's settings;
/// a lookup never creates a topic.
pub fn tool_client_config(bootstrap_servers: &str, settings: &ClientSettings) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap_servers);
    for setting in settings.effective() {
        client.set(&setting.key, &setting.value);
    }
    client.set("allow.auto.create.topics", "false");
    client
}

/// A client-creation error that names a setting becomes an error naming it and where it came
/// from (never its value: it may be a secret).
pub fn setting_error(settings: &ClientSettings, error: KafkaError) -> EngineError {
    if let KafkaError::ClientConfig(_, description, key, _) = &error {
        let source_of_setting = settings
            .get(key)
            .map(|s| s.source.to_string())
            .unwrap_or_else(|| "the engine".into());
        // librdkafka's description quotes the value: not for a secret.
        let reason = if is_secret(key) {
            "librdkafka refused the value".to_string()
        } else {
            description.clone()
        };
        return EngineError::ClientSetting {
            key: key.clone(),
            source_of_setting,
            reason,
        };
    }
    EngineError::Kafka {
        operation: "create client",
        source: error,
    }
}

/// What to check when the broker cannot be reached: the settings that decide how this instance
/// connects, with where each was set (secrets hidden).
pub fn connection_hint(settings: &ClientSettings, error_text: &str) -> String {
    let text = error_text.to_ascii_lowercase();
    let keys: &[&str] = if text.contains("sasl") || text.contains("authentication") {
        &[
            "security.protocol",
            "sasl.mechanisms",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
        ]
    } else if text.contains("ssl") || text.contains("certificate") || text.contains("tls") {
        &[
            "security.protocol",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
            "ssl.endpoint.identification.algorithm",
        ]
    } else {
        return String::new();
    };
    let given: Vec<String> = keys
        .iter()
        .filter_map(|k| settings.get(k))
        .map(ClientSetting::describe)
        .collect();
    format!(
        " (check {}{})",
        keys.iter()
            .filter(|k| **k != "sasl.mechanism")
            .copied()
            .collect::<Vec<_>>()
            .join(", "),
        if given.is_empty() {
            "; none of them is set".to_string()
        } else {
            format!("; given: {}", given.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_settings::SettingSource;

    fn config_with(settings: &[(&str, &str)]) -> StreamsConfig {
        let mut config = StreamsConfig::new("counts-app", "localhost:9092");
        config.client_settings =
            ClientSettings::from_pairs(SettingSource::Flag, settings.iter().copied());
        config
    }

    fn value_of(client: &ClientConfig, key: &str) -> Option<String> {
        client.get(key).map(str::to_string)
    }

    #[test]
    fn the_consumer_protocol_leaves_assignment_and_session_to_the_broker() {
        let classic = client_config(&config_with(&[]), ClientRole::Consumer);
        assert_eq!(value_of(&classic, "group.protocol"), None);
        assert_eq!(
            value_of(&classic, "partition.assignment.strategy").as_deref(),
            Some("cooperative-sticky")
        );
        assert_eq!(
            value_of(&classic, "session.timeout.ms").as_deref(),
            Some("10000")
        );
        let mut config = config_with(&[]);
        config.group_protocol = GroupProtocol::Consumer;
        let consumer = client_config(&config, ClientRole::Consumer);
        assert_eq!(
            value_of(&consumer, "group.protocol").as_deref(),
            Some("consumer")
        );
        assert_eq!(value_of(&consumer, "partition.assignment.strategy"), None);
        assert_eq!(value_of(&consumer, "session.timeout.ms"), None);
        config.validate().unwrap();
        // The protocol is a flag of its own, not a client setting.
        let error = config_with(&[("group.protocol", "consumer")])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("--group-protocol"), "{error}");
        assert_eq!(
            "consumer".parse::<GroupProtocol>().unwrap(),
            GroupProtocol::Consumer
        );
        assert!("new".parse::<GroupProtocol>().is_err());
    }

    #[test]
    fn producers_partition_keys_as_java_clients_do_unless_the_user_chooses_otherwise() {
        let producer = ClientRole::Producer(TaskId::new(0, 1));
        let default = client_config(&config_with(&[]), producer);
        assert_eq!(
            value_of(&default, "partitioner").as_deref(),
            Some("murmur2_random")
        );
        assert_eq!(
            value_of(
                &client_config(&config_with(&[]), ClientRole::Consumer),
                "partitioner"
            ),
            None
        );
        let chosen = config_with(&[("partitioner", "consistent_random")]);
        assert_eq!(
            value_of(&client_config(&chosen, producer), "partitioner").as_deref(),
            Some("consistent_random")
        );
        chosen.validate().unwrap();
        let mut tool = tool_client_config("localhost:9092", &ClientSettings::new());
        assert_eq!(
            value_of(default_key_partitioner(&mut tool), "partitioner").as_deref(),
            Some("murmur2_random")
        );
        let mut tool = tool_client_config("localhost:9092", &chosen.client_settings);
        assert_eq!(
            value_of(default_key_partitioner(&mut tool), "partitioner").as_deref(),
            Some("consistent_random")
        );
    }

    #[test]
    fn every_client_gets_the_users_settings_and_never_creates_topics() {
        let config = config_with(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
        ]);
        for role in [
            ClientRole::Consumer,
            ClientRole::Restore(RestoreFetch::Beside),
            ClientRole::Restore(RestoreFetch::Alone),
            ClientRole::Producer(TaskId::new(0, 3)),
            ClientRole::Admin,
        ] {
            let client = client_config(&config, role);
            assert_eq!(
                value_of(&client, "security.protocol").as_deref(),
                Some("sasl_plaintext"),
                "{role:?}"
            );
            assert_eq!(
                value_of(&client, "sasl.mechanisms").as_deref(),
                Some("SCRAM-SHA-256"),
                "{role:?}"
            );
            assert_eq!(
                value_of(&client, "allow.auto.create.topics").as_deref(),
                Some("false"),
                "{role:?}"
            );
        }
        assert_eq!(
            value_of(
                &client_config(&config, ClientRole::Producer(TaskId::new(0, 3))),
                "client.id"
            )
            .as_deref(),
            Some("counts-app-0_3-producer")
        );
    }

    #[test]
    fn a_protected_key_with_another_value_is_refused_naming_key_and_source() {
        let config = config_with(&[("enable.auto.commit", "true")]);
        match validate_client_settings(&config) {
            Err(EngineError::ClientSetting {
                key,
                source_of_setting,
                reason,
            }) => {
                assert_eq!(key, "enable.auto.commit");
                assert_eq!(source_of_setting, "-X");
                assert!(reason.contains("committed only with the state"), "{reason}");
            }
            other => panic!("expected ClientSetting, got {other:?}"),
        }
        // The same value as the engine's is accepted (a client.properties with acks=all works).
        validate_client_settings(&config_with(&[("acks", "all")])).unwrap();
        assert!(validate_client_settings(&config_with(&[("acks", "1")])).is_err());
        assert!(validate_client_settings(&config_with(&[("group.id", "other")])).is_err());
        assert!(
            validate_client_settings(&config_with(&[("allow.auto.create.topics", "true")]))
                .is_err()
        );
    }

    #[test]
    fn the_memory_budget_sets_the_queues_and_its_keys_are_refused_from_the_user() {
        let mut config = config_with(&[]);
        config.source_partitions = 4;
        let value = |role, key| value_of(&client_config(&config, role), key);
        let producer = ClientRole::Producer(TaskId::new(0, 1));
        assert_eq!(
            value(producer, "queue.buffering.max.kbytes").as_deref(),
            Some("4096")
        );
        assert_eq!(
            value(producer, "queue.buffering.max.messages").as_deref(),
            Some("16384")
        );
        assert_eq!(
            value(ClientRole::Consumer, "queued.max.messages.kbytes").as_deref(),
            Some("8192")
        );
        assert_eq!(
            value(ClientRole::Consumer, "queued.min.messages").as_deref(),
            Some("8192")
        );
        assert_eq!(
            value(
                ClientRole::Restore(RestoreFetch::Beside),
                "queued.max.messages.kbytes"
            )
            .as_deref(),
            Some("4096")
        );
        assert_eq!(
            value(
                ClientRole::Restore(RestoreFetch::Beside),
                "queued.min.messages"
            )
            .as_deref(),
            Some("4096")
        );
        // Both restore consumers share the restore's prefetch budget (only one reads at a
        // time); the one used while nothing processes fetches 256 KiB per partition, the
        // other 48 KiB.
        let alone = ClientRole::Restore(RestoreFetch::Alone);
        assert_eq!(
            value(alone, "queued.max.messages.kbytes").as_deref(),
            Some("4096")
        );
        assert_eq!(
            value(alone, "max.partition.fetch.bytes").as_deref(),
            Some("262144")
        );
        assert_eq!(
            value(
                ClientRole::Restore(RestoreFetch::Beside),
                "max.partition.fetch.bytes"
            )
            .as_deref(),
            Some("49152")
        );
        // A full prefetch is fetched again after 20 ms, not librdkafka's 1 s.
        for role in [
            ClientRole::Consumer,
            ClientRole::Restore(RestoreFetch::Beside),
            ClientRole::Restore(RestoreFetch::Alone),
        ] {
            assert_eq!(value(role, "fetch.queue.backoff.ms").as_deref(), Some("20"));
        }
        for (key, flag) in [
            (
                "queue.buffering.max.kbytes",
                "--producer-buffer-bytes-per-task",
            ),
            ("queued.max.messages.kbytes", "--input-prefetch-bytes"),
            ("queued.min.messages", "--restore-prefetch-bytes"),
        ] {
            match validate_client_settings(&config_with(&[(key, "1024")])) {
                Err(EngineError::ClientSetting {
                    key: refused,
                    reason,
                    ..
                }) => {
                    assert_eq!(refused, key);
                    assert!(reason.contains(flag), "{reason}");
                }
                other => panic!("{key}: expected ClientSetting, got {other:?}"),
            }
        }
    }

    #[test]
    fn librdkafka_rejections_name_the_key_and_source_but_not_the_value() {
        let config = config_with(&[("no.such.key", "x")]);
        match validate_client_settings(&config) {
            Err(EngineError::ClientSetting {
                key,
                source_of_setting,
                ..
            }) => {
                assert_eq!(key, "no.such.key");
                assert_eq!(source_of_setting, "-X");
            }
            other => panic!("expected ClientSetting, got {other:?}"),
        }
        let config = config_with(&[("sasl.password", "hunter2"), ("linger.ms", "not-a-number")]);
        let error = validate_client_settings(&config).unwrap_err().to_string();
        assert!(error.contains("linger.ms"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn tls_sasl_and_zstd_are_compiled_in() {
        let config = config_with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("compression.type", "zstd"),
        ]);
        validate_client_settings(&config).unwrap();
        let plain = config_with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]);
        validate_client_settings(&plain).unwrap();
    }

    #[test]
    fn a_java_client_properties_file_is_read_and_translated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.properties");
        std::fs::write(
            &path,
            "# Confluent Cloud style\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanism=SCRAM-SHA-256\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  username=\"app\" password=\"pa ss=word\";\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location=/etc/kafka/ca.pem\n\
             key.serializer=org.apache.kafka.common.serialization.StringSerializer\n\
             acks=all\n",
        )
        .unwrap();
        let settings = ClientSettings::read_properties_file(&path).unwrap();
        let value = |k: &str| settings.get(k).map(|s| s.value.clone());
        assert_eq!(value("security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(value("sasl.mechanism").as_deref(), Some("SCRAM-SHA-256"));
        assert_eq!(value("sasl.username").as_deref(), Some("app"));
        assert_eq!(value("sasl.password").as_deref(), Some("pa ss=word"));
        assert_eq!(
            value("ssl.ca.location").as_deref(),
            Some("/etc/kafka/ca.pem")
        );
        assert_eq!(value("key.serializer"), None);
        assert_eq!(
            settings.get("acks").unwrap().source,
            SettingSource::File(path.clone())
        );
        let mut config = config_with(&[]);
        config.client_settings = settings;
        validate_client_settings(&config).unwrap();
    }

    #[test]
    fn the_hint_names_the_settings_behind_an_authentication_failure() {
        let config = config_with(&[("sasl.username", "app"), ("sasl.password", "wrong")]);
        let settings = &config.client_settings;
        let hint = connection_hint(settings, "SASL authentication error: Authentication failed");
        assert!(hint.contains("sasl.username=app (-X)"), "{hint}");
        assert!(hint.contains("sasl.password=*** (-X)"), "{hint}");
        assert!(!hint.contains("wrong"), "{hint}");
        assert!(connection_hint(settings, "Connection refused").is_empty());
        assert!(
            connection_hint(settings, "SSL handshake failed: certificate verify failed")
                .contains("ssl.ca.location")
        );
    }
}
