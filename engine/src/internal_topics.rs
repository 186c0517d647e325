//! Start-up checks against the broker: wait (with backoff) until it answers and the source
//! topic exists, then create or verify the compacted changelog topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

fn admin(config: &StreamsConfig) -> Result<AdminClient<DefaultClientContext>> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", format!("{}-admin", config.application_id));
    for (key, value) in &config.client_overrides {
        client.set(key, value);
    }
    client
        .create()
        .map_err(EngineError::kafka("create admin client"))
}

/// Partition count of `topic`: `Ok(None)` if the broker answered that it does not exist.
async fn partition_count(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> std::result::Result<Option<usize>, rdkafka::error::KafkaError> {
    let metadata = tokio::task::block_in_place(|| {
        admin.inner().fetch_metadata(Some(topic), METADATA_TIMEOUT)
    })?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// Waits until the broker answers and `topic` exists; logs every retry. Returns its partitions.
pub async fn wait_for_source_topic(config: &StreamsConfig, topic: &str) -> Result<usize> {
    let admin = admin(config)?;
    let mut backoff = Duration::from_millis(500);
    for attempt in 1u64.. {
        match partition_count(&admin, topic).await {
            Ok(Some(partitions)) => {
                info!("source topic `{topic}` has {partitions} partitions");
                return Ok(partitions);
            }
            Ok(None) => warn!(
                "source topic `{topic}` does not exist yet on {}; retrying in {backoff:?} (attempt {attempt})",
                config.bootstrap_servers
            ),
            Err(e) => warn!(
                "broker {} unreachable: {e}; retrying in {backoff:?} (attempt {attempt})",
                config.bootstrap_servers
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    unreachable!("the retry loop only ends by returning")
}

/// Creates each store's changelog topic (compacted, `partitions` partitions) if missing, and
/// fails if an existing one has a different partition count.
pub async fn ensure_changelog_topics(
    config: &StreamsConfig,
    source_topic: &str,
    stores: &[String],
    partitions: usize,
) -> Result<()> {
    let admin = admin(config)?;
    for store in stores {
        let topic = config.changelog_topic(store);
        let existing = partition_count(&admin, &topic)
            .await
            .map_err(EngineError::kafka("read changelog metadata"))?;
        match existing {
            Some(actual) if actual != partitions => {
                return Err(EngineError::InternalTopicPartitions {
                    topic,
                    source_topic: source_topic.to_string(),
                    expected: partitions,
                    actual,
                })
            }
            Some(_) => info!("changelog topic `{topic}` exists with {partitions} partitions"),
            None => {
                let new_topic = NewTopic::new(
                    &topic,
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
                        Err((name, code)) => {
                            return Err(EngineError::Kafka {
                                operation: "create changelog topic",
                                source: rdkafka::error::KafkaError::AdminOp(code),
                            })
                            .inspect_err(|_| warn!("creating `{name}` failed: {code}"))
                        }
                    }
                }
                info!("created changelog topic `{topic}` ({partitions} partitions, compacted)");
            }
        }
    }
    Ok(())
}
