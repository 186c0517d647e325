//! Starting an application over on purpose (as Kafka Streams' application reset tool and
//! `KafkaStreams::cleanUp` together): its consumer group (and so its committed offsets) and
//! its changelog topics are deleted on the broker, and this machine's state directory of the
//! application removed. Instances elsewhere find their local state belonging to the ended
//! history (changelog gone, no group offset) and wipe it when they start.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use tracing::info;

use crate::clients::{client_config, setting_error, ClientRole, RestoreFetch};
use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::state_directory::StateDirectory;

const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a reset did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Whether the consumer group existed (and was deleted, with its committed offsets).
    pub group_deleted: bool,
    /// The changelog topics deleted (those that existed).
    pub changelogs_deleted: Vec<String>,
    /// This machine's state directory of the application, if there was one to remove.
    pub state_dir_removed: Option<PathBuf>,
}

/// Resets the application whose stores are `stores`: refused while any instance is a member
/// of its group or holds this machine's state directory.
pub async fn reset_application(config: &StreamsConfig, stores: &[String]) -> Result<ResetReport> {
    let group = config.application_id.clone();
    let refused = |reason: String| EngineError::ResetRefused {
        application_id: group.clone(),
        reason,
    };
    let members = group_members(config)?;
    if !members.is_empty() {
        return Err(refused(format!(
            "{} instance(s) are still members of its group ({}): stop every instance first",
            members.len(),
            members.join(", ")
        )));
    }
    let state = match config.state_dir.join(&group).exists() {
        true => Some(
            StateDirectory::lock(&config.state_dir, &group)
                .map_err(|e| refused(format!("this machine's state directory is in use: {e}")))?,
        ),
        false => None,
    };

    let admin: AdminClient<DefaultClientContext> = client_config(config, ClientRole::Admin)
        .create()
        .map_err(|e| setting_error(&config.client_settings, e))?;
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let mut report = ResetReport::default();
    let deleted = admin
        .delete_groups(&[group.as_str()], &options)
        .await
        .map_err(EngineError::kafka("delete the consumer group"))?;
    for result in deleted {
        match result {
            Ok(_) => report.group_deleted = true,
            Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((name, code)) => {
                return Err(refused(format!("deleting consumer group `{name}`: {code}")))
            }
        }
    }
    let changelogs: Vec<String> = stores.iter().map(|s| config.changelog_topic(s)).collect();
    let names: Vec<&str> = changelogs.iter().map(String::as_str).collect();
    let deleted = admin
        .delete_topics(&names, &options)
        .await
        .map_err(EngineError::kafka("delete changelog topics"))?;
    for result in deleted {
        match result {
            Ok(topic) => report.changelogs_deleted.push(topic),
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(refused(format!("deleting `{topic}`: {code}"))),
        }
    }
    if let Some(state) = state {
        let dir = state.app_dir().to_path_buf();
        drop(state);
        std::fs::remove_dir_all(&dir).map_err(|source| EngineError::StateDirIo {
            path: dir.clone(),
            source,
        })?;
        report.state_dir_removed = Some(dir);
    }
    info!(?report, "application `{group}` reset");
    Ok(report)
}

/// The member ids of the application's consumer group (none when it has no members or does
/// not exist).
fn group_members(config: &StreamsConfig) -> Result<Vec<String>> {
    let consumer: BaseConsumer = client_config(config, ClientRole::Restore(RestoreFetch::Beside))
        .create()
        .map_err(|e| setting_error(&config.client_settings, e))?;
    let groups = consumer
        .fetch_group_list(Some(&config.application_id), BROKER_TIMEOUT)
        .map_err(EngineError::kafka("describe the consumer group"))?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == config.application_id)
        .flat_map(|g| g.members().iter().map(|m| m.id().to_string()))
        .collect())
}
