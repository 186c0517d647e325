//! `KafkaStreams`: starts an engine instance (state dir lock, metrics server, broker checks,
//! internal topics, supervisor, consumer loop) and stops it within a bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ractor::{Actor, ActorRef};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::runtime::Handle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tracing::{error, info, warn};

use crate::clients::{client_config, setting_error, ClientRole};
use crate::config::StreamsConfig;
use crate::delivery::GroupMetadataCell;
use crate::dsl::Topology;
use crate::error::{EngineError, Result};
use crate::group_members::GroupMembers;
use crate::http;
use crate::internal_topics::{ensure_changelog_topics, wait_for_topic};
use crate::metrics::EngineMetrics;
use crate::query::{GroupDirectory, KeyPartitioner, Me, Peers, QueryService, QuerySlot};
use crate::runtime::consumer_loop::{ConsumerLoop, LoopWiring};
use crate::runtime::consumer_port::TopicConsumer;
use crate::runtime::rebalance::RebalanceListener;
use crate::runtime::state_updater;
use crate::runtime::supervisor::{Supervisor, SupervisorArgs};
use crate::runtime::wiring::SupervisorMsg;
use crate::state_directory::StateDirectory;
use crate::status::InstanceStatus;
use crate::store_memory::StoreMemory;

/// A running engine instance.
pub struct KafkaStreams {
    config: Arc<StreamsConfig>,
    metrics: EngineMetrics,
    status: Arc<InstanceStatus>,
    metrics_address: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    poller: Option<JoinHandle<Result<()>>>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Ends once the supervisor has stopped and dropped what it holds (the state directory).
    supervisor_exited: tokio::task::JoinHandle<()>,
    fatal: UnboundedReceiver<EngineError>,
    _state_directory: Arc<StateDirectory>,
}

impl KafkaStreams {
    /// Validates the settings, locks the state directory, waits for the broker and the source
    /// topic, prepares the changelog topics and joins the group. Must run on a multi-threaded
    /// Tokio runtime.
    pub async fn start(topology: Topology, config: StreamsConfig) -> Result<Self> {
        config.validate()?;
        let config = Arc::new(config);
        let state_directory = Arc::new(StateDirectory::lock(
            &config.state_dir,
            &config.application_id,
        )?);
        let leftover = state_directory.existing_tasks()?;
        info!(
            "application `{}`: {} | state in {} (task dirs found: {})",
            config.application_id,
            topology.describe(),
            state_directory.app_dir().display(),
            if leftover.is_empty() {
                "none".to_string()
            } else {
                leftover
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let metrics = EngineMetrics::new(&config.application_id, topology.source_topic());
        let instance_id = config.group_instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            format!("{host}-{}", std::process::id())
        });
        let status = Arc::new(InstanceStatus::new(
            instance_id.clone(),
            config.liveness_timeout,
        ));
        status.heartbeat();
        let queries = QuerySlot::default();
        let metrics_address = match config.metrics_address {
            Some(address) => Some(
                http::serve(address, metrics.clone(), status.clone(), queries.clone())
                    .await?
                    .0,
            ),
            None => None,
        };
        let config = Arc::new(StreamsConfig {
            application_server: application_server(&config, metrics_address),
            ..(*config).clone()
        });

        info!("client settings: {}", config.client_settings.describe());
        // Live but not ready while waiting: a pod deployed before its topics waits, it is not
        // restarted.
        let partitions =
            wait_for_topic(&config, &status, topology.source_topic(), "source").await?;
        for sink in &topology.sink_topics {
            wait_for_topic(&config, &status, sink, "output").await?;
        }
        ensure_changelog_topics(
            &config,
            topology.source_topic(),
            topology.stores(),
            partitions,
        )
        .await?;
        // The consumers' prefetch is set per partition.
        let config = Arc::new(StreamsConfig {
            source_partitions: partitions as usize,
            ..(*config).clone()
        });
        let budget = config.memory_budget();
        budget.report(&metrics);
        info!("memory budget: {budget}");

        let (poller_tx, poller_rx) = crossbeam_channel::unbounded();
        let (committed_tx, committed_rx) = crossbeam_channel::unbounded();
        let (restored_tx, restored_rx) = crossbeam_channel::unbounded();
        let (fatal_tx, fatal) = unbounded_channel();
        let topology = Arc::new(topology);
        if metrics_address.is_some() {
            let started = start_queries(&config, &topology, &status, &instance_id);
            let _ = queries.set(started);
        }
        let group_metadata = GroupMetadataCell::default();
        let (updater, _updater_thread) = state_updater::start(
            config.clone(),
            topology.source_topic().to_string(),
            metrics.clone(),
            status.clone(),
            restored_tx,
        )?;
        let (supervisor, supervisor_exited) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                topology: topology.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                state_directory: state_directory.clone(),
                store_memory: StoreMemory::new(config.store_memory),
                poller: poller_tx,
                committed: committed_tx,
                updater,
                fatal: fatal_tx.clone(),
                status: status.clone(),
                leftover_tasks: leftover.clone(),
                group_metadata: group_metadata.clone(),
            },
        )
        .await
        .map_err(|e| EngineError::actor("supervisor", e))?;

        let runtime = Handle::current();
        let consumer = Self::consumer(
            &config,
            RebalanceListener {
                supervisor: supervisor.clone(),
                runtime: runtime.clone(),
                source_topic: topology.source_topic().to_string(),
                status: status.clone(),
                metrics: metrics.clone(),
                broker_errors_seen: Default::default(),
                group_metadata,
            },
        )?;
        consumer
            .subscribe(&[topology.source_topic()])
            .map_err(EngineError::kafka("subscribe"))?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let wiring = LoopWiring {
            supervisor: supervisor.clone(),
            runtime,
            commands: poller_rx,
            committed: committed_rx,
            restored: restored_rx,
            shutdown: shutdown.clone(),
            commit_interval: config.commit_interval,
            status: status.clone(),
            metrics: metrics.clone(),
        };
        let source_topic = topology.source_topic().to_string();
        let poller = std::thread::Builder::new()
            .name("kstreams-consumer-loop".into())
            .spawn(move || {
                let input = TopicConsumer {
                    consumer: &consumer,
                    topic: &source_topic,
                };
                let result = ConsumerLoop::new(input, wiring).run();
                if let Err(e) = &result {
                    error!("consumer loop stopped: {e}");
                    let _ = fatal_tx.send(EngineError::actor("consumer loop", e));
                }
                result
            })
            .map_err(|e| EngineError::actor("consumer loop", e))?;
        info!(
            "joined group `{}`; waiting for an assignment",
            config.group_id()
        );
        Ok(Self {
            config,
            metrics,
            status,
            metrics_address,
            shutdown,
            poller: Some(poller),
            supervisor,
            supervisor_exited,
            fatal,
            _state_directory: state_directory,
        })
    }

    fn consumer(
        config: &StreamsConfig,
        listener: RebalanceListener,
    ) -> Result<BaseConsumer<RebalanceListener>> {
        client_config(config, ClientRole::Consumer)
            .create_with_context(listener)
            .map_err(|e| setting_error(&config.client_settings, e))
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Where `/metrics` is served, if enabled.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// Health and per-task progress, as `/status` shows it.
    pub fn status(&self) -> &InstanceStatus {
        &self.status
    }

    pub fn is_ready(&self) -> bool {
        self.status.is_ready()
    }

    /// Resolves when the instance fails for good (a task or the consumer loop).
    pub async fn failed(&mut self) -> EngineError {
        match self.fatal.recv().await {
            Some(error) => error,
            None => EngineError::actor("supervisor", "stopped"),
        }
    }

    /// Commits, closes every task and leaves the group, within `shutdown_timeout`.
    pub async fn close(mut self) -> Result<()> {
        let timeout = self.config.shutdown_timeout;
        let started = std::time::Instant::now();
        self.shutdown.store(true, Ordering::Relaxed);
        let poller = self.poller.take();
        let finished = tokio::time::timeout(
            timeout,
            tokio::task::spawn_blocking(move || poller.map(|p| p.join())),
        )
        .await
        .map_err(|_| EngineError::ShutdownTimeout(timeout))?;
        self.status.set_stopped();
        // Tasks and the supervisor are gone before this returns, their stores and the state
        // directory's lock released: a new instance may open them at once (a task that gave
        // up leaves the others running until here).
        let remaining = timeout.saturating_sub(started.elapsed());
        self.supervisor
            .stop_children_and_wait(None, Some(remaining))
            .await;
        self.supervisor.stop(None);
        let remaining = timeout.saturating_sub(started.elapsed());
        tokio::time::timeout(remaining, &mut self.supervisor_exited)
            .await
            .map_err(|_| EngineError::ShutdownTimeout(timeout))?
            .map_err(|e| EngineError::actor("supervisor", e))?;
        let (processed, output, changelog) = self.metrics.record_totals();
        let peak_rss_kib = crate::metrics::peak_rss_kib().unwrap_or(0);
        let cpu_ms = crate::metrics::process_cpu_ms().unwrap_or(0);
        info!(
            processed,
            output,
            changelog,
            peak_rss_kib,
            cpu_ms,
            "stopped: records processed, output and changelog records sent, peak memory, CPU time used"
        );
        match finished {
            Ok(Some(Ok(result))) => result,
            Ok(Some(Err(_))) => Err(EngineError::actor("consumer loop", "panicked")),
            Ok(None) => Ok(()),
            Err(e) => Err(EngineError::actor("consumer loop", e)),
        }
    }
}

/// Where other instances reach this one's queries: the setting, else the HTTP server's own
/// address when it is bound to one.
fn application_server(config: &StreamsConfig, bound: Option<SocketAddr>) -> Option<String> {
    let bound = bound?;
    if let Some(server) = &config.application_server {
        return Some(server.clone());
    }
    if bound.ip().is_unspecified() {
        warn!(
            "the HTTP server listens on {bound}, which other instances cannot dial: set \
             --application-server (APPLICATION_SERVER) to host:port so that queries for keys \
             owned here can be forwarded"
        );
        return None;
    }
    Some(bound.to_string())
}

/// Starts answering queries: the group directory refreshes in the background. A partitioner
/// queries cannot follow leaves the API answering why.
fn start_queries(
    config: &StreamsConfig,
    topology: &Arc<Topology>,
    status: &Arc<InstanceStatus>,
    instance: &str,
) -> std::result::Result<Arc<QueryService>, String> {
    let setting = config.client_settings.get("partitioner");
    let partitioner = KeyPartitioner::from_setting(setting.map(|s| s.value.as_str()))
        .map_err(|e| e.to_string())
        .inspect_err(|e| warn!("queries are off: {e}"))?;
    let members = GroupMembers::new(config)
        .map_err(|e| e.to_string())
        .inspect_err(|e| warn!("queries are off: {e}"))?;
    let me = Me {
        instance: instance.to_string(),
        endpoint: config.application_server.clone(),
    };
    if let Some(endpoint) = &me.endpoint {
        info!("answering queries for the group as {endpoint} (application server)");
    }
    let peers = Peers::new();
    let directory = Arc::new(GroupDirectory::new(
        me,
        status.clone(),
        config.source_partitions,
        members,
        peers.clone(),
    ));
    directory.start();
    Ok(Arc::new(QueryService {
        status: status.clone(),
        topology: topology.clone(),
        partitioner,
        partitions: config.source_partitions,
        directory,
        peers,
    }))
}
