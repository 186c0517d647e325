//! The group's members as the broker lists them (DescribeGroups): their ids, for standby
//! placement, and the query endpoint each one carries in its consumer's `client.id`.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::clients::{client_config, setting_error, ClientRole};
use crate::config::{StreamsConfig, ENDPOINT_SEPARATOR};
use crate::error::{EngineError, Result};

const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One member of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMember {
    pub id: String,
    /// Its consumer's `client.id` (empty when the broker gives neither it nor a member id
    /// that carries it).
    pub client_id: String,
    /// Where the member answers queries, from its `client.id` (`None`: it published none).
    pub endpoint: Option<String>,
}

impl GroupMember {
    /// Reads a member as DescribeGroups gives it. Brokers that leave `client_id` empty (the
    /// local broker does) name members `<client.id>-<uuid>`, as Kafka does: the client id is
    /// then read from the member id.
    pub(crate) fn from_description(id: &str, client_id: &str) -> Self {
        const UUID_SUFFIX: usize = 37; // "-" and a 36-character UUID
        let client_id = match client_id {
            "" => id.get(..id.len().saturating_sub(UUID_SUFFIX)).unwrap_or(""),
            given => given,
        };
        let endpoint = client_id
            .rsplit_once(ENDPOINT_SEPARATOR)
            .map(|(_, endpoint)| endpoint.to_string())
            .filter(|endpoint| !endpoint.is_empty());
        Self {
            id: id.to_string(),
            client_id: client_id.to_string(),
            endpoint,
        }
    }
}

/// Reads the group's members from the broker.
pub(crate) struct GroupMembers {
    consumer: BaseConsumer,
    group: String,
}

impl GroupMembers {
    pub(crate) fn new(config: &StreamsConfig) -> Result<Self> {
        let consumer = client_config(config, ClientRole::Admin)
            .create()
            .map_err(|e| setting_error(&config.client_settings, e))?;
        Ok(Self {
            consumer,
            group: config.group_id().to_string(),
        })
    }

    /// The members once the group is stable, ordered by id (`None` while it rebalances: a
    /// caller waits for the next look rather than act on a passing state). Blocks on the
    /// broker.
    pub(crate) fn stable_members(&self) -> Result<Option<Vec<GroupMember>>> {
        let list = self
            .consumer
            .fetch_group_list(Some(&self.group), DESCRIBE_TIMEOUT)
            .map_err(EngineError::kafka("describe the consumer group"))?;
        let Some(group) = list.groups().iter().find(|g| g.name() == self.group) else {
            return Ok(None);
        };
        if group.state() != "Stable" {
            return Ok(None);
        }
        let mut members: Vec<GroupMember> = group
            .members()
            .iter()
            .map(|m| GroupMember::from_description(m.id(), m.client_id()))
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Some(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b6a3f7e-51c2-4a8e-9d0f-3c1e2b4a5d6f";

    #[test]
    fn the_endpoint_is_read_from_the_client_id_or_the_member_id() {
        let client_id = "counts-app-kstreams-count-0-consumer@kstreams-count-0.svc:9100";
        let member_id = format!("{client_id}-{UUID}");
        // Kafka fills client_id in; the local broker leaves it empty.
        for given in [client_id, ""] {
            let member = GroupMember::from_description(&member_id, given);
            assert_eq!(member.id, member_id);
            assert_eq!(
                member.endpoint.as_deref(),
                Some("kstreams-count-0.svc:9100")
            );
        }
        // A member that publishes no endpoint (or an id too short to carry one).
        let plain = GroupMember::from_description(&format!("counts-app-consumer-{UUID}"), "");
        assert_eq!(plain.endpoint, None);
        assert_eq!(GroupMember::from_description("m", "").endpoint, None);
    }
}
