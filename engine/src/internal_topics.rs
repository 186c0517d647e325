//! Start-up checks against the broker: wait (with backoff) until it answers and the source and
//! output topics exist, then create or verify the compacted changelog topics. Lookups never
//! create a topic (`allow.auto.create.topics=false`).

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use tracing::{debug, info, warn};

use crate::clients::{client_config, connection_hint, setting_error, ClientRole};
use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::status::InstanceStatus;

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a failed lookup waits for the client's log and error events that say why (a
/// lookup that succeeded serves those already there and waits for none: this wait, once per
/// topic, was most of an instance's start-up).
const EVENTS_POLL: Duration = Duration::from_millis(100);

/// Keeps librdkafka's last client-level error (a refused connection, a failed TLS handshake or
/// SASL authentication): a metadata timeout alone does not say why. They arrive as log and
/// error events when the lookup client is polled, and reach our log in the retry message
/// instead of on their own.
#[derive(Default)]
struct LastClientError(Mutex<Option<String>>);

impl ClientContext for LastClientError {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                debug!(target: "librdkafka", "admin client: {facility} {message}");
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
            }
            RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", "admin client: {facility} {message}")
            }
            _ => debug!(target: "librdkafka", "admin client: {facility} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!("admin client: {error}: {reason}");
        // "All brokers are down" follows from the error that took them down: keep that one.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        }
    }
}

impl ProducerContext for LastClientError {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

impl LastClientError {
    /// The last error, kept: librdkafka logs a repeated identical error only once.
    fn last(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Metadata lookups go through a producer handle, which is polled, so that librdkafka's logs
/// and errors reach [`LastClientError`] (rust-rdkafka's admin client never polls its main
/// queue, so its logs and errors are lost).
type Lookups = BaseProducer<LastClientError>;
type Admin = AdminClient<DefaultClientContext>;

fn lookups(config: &StreamsConfig) -> Result<Lookups> {
    client_config(config, ClientRole::Admin)
        .create_with_context(LastClientError::default())
        .map_err(|e| setting_error(&config.client_settings, e))
}

fn admin(config: &StreamsConfig) -> Result<Admin> {
    client_config(config, ClientRole::Admin)
        .create()
        .map_err(|e| setting_error(&config.client_settings, e))
}

/// Drops `admin` on a thread of its own: rust-rdkafka's admin client joins its polling
/// thread when dropped, which wakes every 100 ms, and start-up need not wait for that.
fn drop_in_background(admin: Admin) {
    // Should no thread be spared, the closure, and the client in it, is dropped right here.
    let _ = std::thread::Builder::new()
        .name("kstreams-admin-drop".into())
        .spawn(move || drop(admin));
}

/// What the broker said about a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicLookup {
    Exists {
        partitions: usize,
    },
    Missing,
    NotAuthorized,
    /// Any other error the broker gave for the topic.
    Error(RDKafkaErrorCode),
}

async fn look_up(lookups: &Lookups, topic: &str) -> std::result::Result<TopicLookup, KafkaError> {
    let metadata = tokio::task::block_in_place(|| {
        let metadata = lookups
            .client()
            .fetch_metadata(Some(topic), METADATA_TIMEOUT);
        // Serves the log and error events the lookup raised (see `LastClientError`).
        lookups.poll(if metadata.is_ok() {
            Duration::ZERO
        } else {
            EVENTS_POLL
        });
        metadata
    })?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    Ok(classify(found.map(|t| {
        (t.error().map(RDKafkaErrorCode::from), t.partitions().len())
    })))
}

/// What the broker's answer for a topic (its error code and partition count, if it named the
/// topic at all) means.
fn classify(answer: Option<(Option<RDKafkaErrorCode>, usize)>) -> TopicLookup {
    match answer {
        None | Some((None, 0)) => TopicLookup::Missing,
        Some((None, partitions)) => TopicLookup::Exists { partitions },
        Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => TopicLookup::Missing,
        Some((Some(RDKafkaErrorCode::TopicAuthorizationFailed), _)) => TopicLookup::NotAuthorized,
        Some((Some(code), _)) => TopicLookup::Error(code),
    }
}

/// Why a metadata request failed, with the client's own error when it has one (TLS, SASL) and
/// the settings to check.
fn unreachable_reason(config: &StreamsConfig, lookups: &Lookups, error: &KafkaError) -> String {
    let detail = lookups
        .client()
        .context()
        .last()
        .map(|reason| format!("{error}; last client error: {reason}"))
        .unwrap_or_else(|| error.to_string());
    let hint = connection_hint(&config.client_settings, &detail);
    format!("{detail}{hint}")
}

/// Waits until the broker answers and `topic` exists; logs every retry, keeps `status` live
/// (not ready) meanwhile. `what` names the topic's role ("source", "output"). Returns its
/// partition count. A topic this client may not read is an error: waiting would not help.
pub async fn wait_for_topic(
    config: &StreamsConfig,
    status: &InstanceStatus,
    topic: &str,
    what: &str,
) -> Result<usize> {
    let lookups = lookups(config)?;
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1u64.. {
        status.heartbeat();
        match look_up(&lookups, topic).await {
            Ok(TopicLookup::Exists { partitions }) => {
                info!("{what} topic `{topic}` has {partitions} partitions");
                return Ok(partitions);
            }
            Ok(TopicLookup::NotAuthorized) => {
                return Err(EngineError::TopicNotAuthorized {
                    topic: topic.to_string(),
                    operation: "describe",
                })
            }
            Ok(TopicLookup::Missing) => warn!(
                "{what} topic `{topic}` does not exist on {} (create it; topics are never \
                 created by a lookup); retrying in {backoff:?} (attempt {attempt})",
                config.bootstrap_servers
            ),
            Ok(TopicLookup::Error(code)) => warn!(
                "{what} topic `{topic}`: the broker answered {code}; retrying in {backoff:?} \
                 (attempt {attempt})"
            ),
            Err(e) => warn!(
                "broker {} unreachable: {}; retrying in {backoff:?} (attempt {attempt})",
                config.bootstrap_servers,
                unreachable_reason(config, &lookups, &e)
            ),
        }
        // Sleep in short steps so that liveness keeps being reported.
        let wake = tokio::time::Instant::now() + backoff;
        while tokio::time::Instant::now() < wake {
            status.heartbeat();
            tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + FIRST_BACKOFF)).await;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    unreachable!("the retry loop only ends by returning")
}

/// The `cleanup.policy` of an existing topic, as the broker describes it (`None` when the
/// broker does not say).
async fn cleanup_policy(admin: &Admin, topic: &str) -> Result<Option<String>> {
    let results = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT)),
        )
        .await
        .map_err(EngineError::kafka("describe changelog topic config"))?;
    match results.into_iter().next() {
        Some(Ok(resource)) => Ok(resource
            .get("cleanup.policy")
            .and_then(|entry| entry.value.clone())),
        Some(Err(RDKafkaErrorCode::TopicAuthorizationFailed)) => {
            Err(EngineError::TopicNotAuthorized {
                topic: topic.to_string(),
                operation: "describe the configuration of",
            })
        }
        Some(Err(code)) => Err(EngineError::Kafka {
            operation: "describe changelog topic config",
            source: KafkaError::AdminOp(code),
        }),
        None => Ok(None),
    }
}

/// Whether a `cleanup.policy` value keeps the latest record of every key for good: `compact`
/// alone (`compact,delete` also removes records past retention, which a restore cannot tell
/// from records never written).
fn keeps_every_key(policy: &str) -> bool {
    policy
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .all(|p| p.eq_ignore_ascii_case("compact"))
        && !policy.trim().is_empty()
}

/// Creates each store's changelog topic (compacted, `partitions` partitions) if missing; an
/// existing one must have as many partitions and a compacting cleanup policy.
pub async fn ensure_changelog_topics(
    config: &StreamsConfig,
    source_topic: &str,
    stores: &[String],
    partitions: usize,
) -> Result<()> {
    let lookups = lookups(config)?;
    let admin = admin(config)?;
    let checked =
        check_changelog_topics(config, &lookups, &admin, source_topic, stores, partitions).await;
    drop_in_background(admin);
    checked
}

/// Checks (or creates) each store's changelog topic: see [`ensure_changelog_topics`].
async fn check_changelog_topics(
    config: &StreamsConfig,
    lookups: &Lookups,
    admin: &Admin,
    source_topic: &str,
    stores: &[String],
    partitions: usize,
) -> Result<()> {
    for store in stores {
        let topic = config.changelog_topic(store);
        let lookup = look_up(lookups, &topic).await.map_err(|source| {
            warn!(
                "reading changelog metadata: {}",
                unreachable_reason(config, lookups, &source)
            );
            EngineError::Kafka {
                operation: "read changelog metadata",
                source,
            }
        })?;
        match lookup {
            TopicLookup::Exists { partitions: actual } if actual != partitions => {
                return Err(EngineError::InternalTopicPartitions {
                    topic,
                    source_topic: source_topic.to_string(),
                    expected: partitions,
                    actual,
                })
            }
            TopicLookup::Exists { .. } => match cleanup_policy(admin, &topic).await? {
                Some(policy) if !keeps_every_key(&policy) => {
                    return Err(EngineError::ChangelogNotCompacted { topic, policy })
                }
                Some(policy) => info!(
                    "changelog topic `{topic}` exists with {partitions} partitions \
                     (cleanup.policy {policy})"
                ),
                None => warn!(
                    "changelog topic `{topic}` exists with {partitions} partitions; the broker \
                     did not report its cleanup.policy (it must be `compact`)"
                ),
            },
            TopicLookup::NotAuthorized => {
                return Err(EngineError::TopicNotAuthorized {
                    topic,
                    operation: "describe",
                })
            }
            TopicLookup::Error(code) => {
                return Err(EngineError::Kafka {
                    operation: "read changelog metadata",
                    source: KafkaError::MetadataFetch(code),
                })
            }
            TopicLookup::Missing => create_changelog(config, admin, &topic, partitions).await?,
        }
    }
    Ok(())
}

async fn create_changelog(
    config: &StreamsConfig,
    admin: &Admin,
    topic: &str,
    partitions: usize,
) -> Result<()> {
    let new_topic = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&new_topic],
            &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
        )
        .await
        .map_err(EngineError::kafka("create changelog topic"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))
            | Err((_, RDKafkaErrorCode::ClusterAuthorizationFailed)) => {
                return Err(EngineError::TopicNotAuthorized {
                    topic: topic.to_string(),
                    operation: "create",
                })
            }
            Err((name, code)) => {
                warn!("creating `{name}` failed: {code}");
                return Err(EngineError::Kafka {
                    operation: "create changelog topic",
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    info!(
        "created changelog topic `{topic}` ({partitions} partitions, compacted, replication \
         factor {})",
        match config.replication_factor {
            -1 => "the broker's default".to_string(),
            n => n.to_string(),
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tansu enforces no ACLs, so the suite cannot get a real "not authorized" answer; the
    /// mapping from the broker's error codes is checked here.
    #[test]
    fn not_authorized_is_told_apart_from_missing() {
        use RDKafkaErrorCode as Code;
        assert_eq!(classify(None), TopicLookup::Missing);
        assert_eq!(classify(Some((None, 0))), TopicLookup::Missing);
        assert_eq!(
            classify(Some((None, 4))),
            TopicLookup::Exists { partitions: 4 }
        );
        assert_eq!(
            classify(Some((Some(Code::UnknownTopicOrPartition), 0))),
            TopicLookup::Missing
        );
        assert_eq!(
            classify(Some((Some(Code::TopicAuthorizationFailed), 0))),
            TopicLookup::NotAuthorized
        );
        assert_eq!(
            classify(Some((Some(Code::LeaderNotAvailable), 4))),
            TopicLookup::Error(Code::LeaderNotAvailable)
        );
        let message = EngineError::TopicNotAuthorized {
            topic: "input-topic".into(),
            operation: "describe",
        }
        .to_string();
        assert!(
            message.contains("not authorized to describe topic `input-topic`"),
            "{message}"
        );
        assert!(!message.contains("does not exist"), "{message}");
    }

    #[test]
    fn only_compaction_alone_keeps_state() {
        assert!(keeps_every_key("compact"));
        assert!(keeps_every_key(" Compact "));
        assert!(!keeps_every_key("compact,delete"), "retention deletes keys");
        assert!(!keeps_every_key("delete, compact"));
        assert!(!keeps_every_key("delete"));
        assert!(!keeps_every_key(""));
    }
}
