//! Where every partition of the group is held, as this instance knows it: the members' query
//! endpoints from the broker (DescribeGroups, each member's `client.id`), then what each of
//! them says it holds (`/v1/metadata?scope=local`): the members every 5 s, what they hold every
//! second, both at once when a query finds no owner. This instance's own part is read from
//! its status when asked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, warn};

use super::answers::{GroupMetadata, HeldPartition, InstanceMetadata, PartitionHolders};
use super::peers::Peers;
use crate::group_members::GroupMembers;
use crate::status::InstanceStatus;

/// How often the directory asks the other members what they hold.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often it asks the broker for the member list (which changes only with the group's
/// membership), unless a query found no owner; and the soonest it asks again then.
const MEMBERS_EVERY: Duration = Duration::from_secs(5);
const MEMBERS_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// The soonest a query that found no owner may ask again (a burst of them asks once).
const WAKE_AT_MOST_EVERY: Duration = Duration::from_millis(200);

/// This instance: its name and where it answers.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub instance: String,
    pub endpoint: Option<String>,
}

impl Me {
    /// How answers name this instance: its endpoint, else its name.
    pub(crate) fn name(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(&self.instance)
    }
}

#[derive(Default)]
struct Known {
    /// The other members' endpoints, from the last stable look at the group.
    peers: Vec<String>,
    /// Members without an endpoint at the last look.
    without_endpoint: usize,
    /// What each peer said it holds at the last refresh (those that answered).
    others: Vec<InstanceMetadata>,
    refreshed: Option<Instant>,
    /// When the broker was last asked for the members.
    members_asked: Option<Instant>,
    /// A query found no owner, or its owner did not answer: ask the broker at the next refresh.
    members_wanted: bool,
}

pub(crate) struct GroupDirectory {
    me: Me,
    status: Arc<InstanceStatus>,
    partitions: usize,
    members: Arc<GroupMembers>,
    peers: Peers,
    known: Mutex<Known>,
    wake: Notify,
    last_wake: Mutex<Option<Instant>>,
}

impl GroupDirectory {
    pub(crate) fn new(
        me: Me,
        status: Arc<InstanceStatus>,
        partitions: usize,
        members: GroupMembers,
        peers: Peers,
    ) -> Self {
        Self {
            me,
            status,
            partitions,
            members: Arc::new(members),
            peers,
            known: Mutex::default(),
            wake: Notify::new(),
            last_wake: Mutex::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refreshes in the background until the runtime stops.
    pub(crate) fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let directory = self.clone();
        tokio::spawn(async move {
            loop {
                directory.refresh().await;
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH_EVERY) => {}
                    _ = directory.wake.notified() => {}
                }
            }
        })
    }

    /// Asks for a refresh now (a query found no owner, or its owner did not answer).
    pub(crate) fn wake(&self) {
        self.known().members_wanted = true;
        let mut last = self.last_wake.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WAKE_AT_MOST_EVERY) {
            *last = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    /// Whether to ask the broker for the members now.
    fn members_due(&self) -> bool {
        let known = self.known();
        match known.members_asked {
            None => true,
            Some(at) if known.members_wanted => at.elapsed() >= MEMBERS_AT_MOST_EVERY,
            Some(at) => at.elapsed() >= MEMBERS_EVERY,
        }
    }

    async fn refresh(&self) {
        if self.members_due() {
            self.refresh_members().await;
        }
        self.refresh_holdings().await;
    }

    /// The member list and their endpoints, from the broker.
    async fn refresh_members(&self) {
        {
            let mut known = self.known();
            known.members_asked = Some(Instant::now());
            known.members_wanted = false;
        }
        let members = self.members.clone();
        match tokio::task::spawn_blocking(move || members.stable_members()).await {
            Ok(Ok(Some(members))) => {
                let mut known = self.known();
                known.without_endpoint = members.iter().filter(|m| m.endpoint.is_none()).count();
                known.peers = members
                    .into_iter()
                    .filter_map(|m| m.endpoint)
                    .filter(|endpoint| Some(endpoint) != self.me.endpoint.as_ref())
                    .collect();
            }
            // Rebalancing: the last stable member list stands until the next look.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => debug!("query directory: {e}"),
            Err(e) => warn!("query directory: the group look failed: {e}"),
        }
    }

    /// What each other member holds, asked of it.
    async fn refresh_holdings(&self) {
        let peers = self.known().peers.clone();
        let asked = peers.iter().map(|endpoint| {
            self.peers
                .get_json::<InstanceMetadata>(endpoint, "/v1/metadata?scope=local")
        });
        let answers = futures::future::join_all(asked).await;
        let others = answers
            .into_iter()
            .filter_map(|answer| answer.inspect_err(|e| debug!("query directory: {e}")).ok())
            .collect();
        let mut known = self.known();
        known.others = others;
        known.refreshed = Some(Instant::now());
    }

    /// What this instance holds now.
    pub(crate) fn local(&self) -> InstanceMetadata {
        let active = self
            .status
            .task_progress()
            .into_iter()
            .map(|(task, progress)| HeldPartition {
                partition: task.partition,
                state: progress.phase().to_string(),
                lag: None,
            })
            .collect();
        let standbys = self
            .status
            .standby_lags()
            .into_iter()
            .map(|(task, lag)| HeldPartition {
                partition: task.partition,
                state: "standby".into(),
                lag,
            })
            .collect();
        InstanceMetadata {
            instance: self.me.instance.clone(),
            endpoint: self.me.endpoint.clone(),
            active,
            standbys,
        }
    }

    /// The whole group: this instance now, the others as last learned.
    pub(crate) fn group(&self) -> GroupMetadata {
        let known = self.known();
        let mut instances = vec![self.local()];
        instances.extend(known.others.iter().cloned());
        let unanswered = known.peers.len().saturating_sub(known.others.len());
        let unreachable = known.without_endpoint + unanswered;
        let age_ms = known
            .refreshed
            .map_or(u64::MAX, |at| at.elapsed().as_millis() as u64);
        GroupMetadata::from_instances(instances, self.partitions, unreachable, age_ms)
    }

    /// Who among the other members holds `partition`, as last learned (a query forwarded
    /// there; this instance's own part it reads itself).
    pub(crate) fn others_holding(&self, partition: i32) -> PartitionHolders {
        PartitionHolders::among(partition, &self.known().others)
    }

    pub(crate) fn me(&self) -> &Me {
        &self.me
    }
}
