//! `kstreams-count local`: the StatefulSet on one machine. Starts `kstreams-count-0..N-1`,
//! each with its own state dir and metrics port, runs a load generator at a chosen rate, shows
//! a live view, and takes commands to add, stop, kill and restart instances while it runs.

mod cluster;
mod command;
mod instance;
mod load;
mod status_client;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::client_args::ClientArgs;
use cluster::{Cluster, ClusterSettings};
use command::RunnerCommand;
use load::LoadGenerator;
use view::{Header, Screen};

/// How long `quit` waits for the instances' clean shutdown before killing them.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Instances to start: kstreams-count-0 .. kstreams-count-(N-1).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long, default_value = "counts-app")]
    application_id: String,
    #[arg(long, default_value = "input-topic")]
    input_topic: String,
    #[arg(long, default_value = "counts-topic")]
    output_topic: String,
    /// Partitions of the input topic, when it has to be created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Input records per second from the load generator (0: none; `rate R` changes it live).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Distinct keys the load generator draws from (uniformly).
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Instance i keeps its state in <state-root>/kstreams-count-i (its "volume") and logs to
    /// <state-root>/kstreams-count-i.log.
    #[arg(long, default_value = "local-cluster")]
    state_root: PathBuf,
    /// Instance i serves /metrics and /status on 127.0.0.1:<metrics-port-base + i>.
    #[arg(long, default_value_t = 9110)]
    metrics_port_base: u16,
    /// Each instance's commit interval (short, so restarts restore short tails).
    #[arg(long, default_value_t = 2_000)]
    commit_interval_ms: u64,
    /// Give each instance its name as group.instance.id (static membership; needs a broker
    /// that supports it, which the local tansu broker does not).
    #[arg(long)]
    static_membership: bool,
    /// Print events and periodic snapshots as plain lines instead of a live screen (the
    /// default when stdin or stdout is not a terminal); commands are then read from stdin.
    #[arg(long)]
    plain: bool,
    /// How often to poll the instances and redraw.
    #[arg(long, default_value_t = 250)]
    refresh_ms: u64,
    /// Further arguments for every instance, after `--` (e.g. `-- --session-timeout-ms 6000`).
    #[arg(last = true)]
    instance_args: Vec<String>,
}

impl LocalArgs {
    fn validate(&self) -> anyhow::Result<()> {
        let fail = |setting: &str, why: String| anyhow::bail!("invalid setting `{setting}`: {why}");
        if !(1..=64).contains(&self.instances) {
            fail(
                "instances",
                format!("{} is not between 1 and 64", self.instances),
            )?;
        }
        if self.partitions < 1 {
            fail(
                "partitions",
                format!("{} is not a positive number", self.partitions),
            )?;
        }
        if self.keys == 0 {
            fail("keys", "must be at least 1".into())?;
        }
        if self.refresh_ms < 50 {
            fail(
                "refresh-ms",
                format!("{} ms is below 50 ms", self.refresh_ms),
            )?;
        }
        if u32::from(self.metrics_port_base) + 64 > u32::from(u16::MAX) {
            fail(
                "metrics-port-base",
                format!("{} leaves no room for 64 instances", self.metrics_port_base),
            )?;
        }
        Ok(())
    }

    /// Arguments every instance gets before its own state dir and metrics address.
    fn instance_args(&self, broker: &str) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        args.extend(self.client.child_args(broker));
        args.extend([
            "--application-id".into(),
            self.application_id.clone(),
            "--input-topic".into(),
            self.input_topic.clone(),
            "--output-topic".into(),
            self.output_topic.clone(),
            "--commit-interval-ms".into(),
            self.commit_interval_ms.to_string(),
        ]);
        args.extend(self.instance_args.iter().cloned());
        args
    }
}

/// Creates the input and output topics when missing and returns the input's partition count.
async fn ensure_topics(args: &LocalArgs, client: &ClientConfig) -> anyhow::Result<usize> {
    for topic in [&args.input_topic, &args.output_topic] {
        crate::console::create_topic(crate::console::CreateTopicArgs {
            name: topic.clone(),
            client: args.client.clone(),
            partitions: args.partitions,
            replication_factor: -1,
            compact: false,
            configs: Vec::new(),
            // An existing topic is used as it is; its partitions are read below.
            any_existing_partitions: true,
        })
        .await?;
    }
    let consumer: BaseConsumer = client.create().context("create metadata client")?;
    let topic = args.input_topic.clone();
    tokio::task::spawn_blocking(move || crate::console::partition_count(consumer.client(), &topic))
        .await?
}

/// Typed lines arrive here: from the live screen's prompt, or from stdin in plain mode.
fn read_stdin_lines(lines: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    args.validate()?;
    let (connection, client) = args.client.tool_config()?;
    let partitions = ensure_topics(&args, &client).await?;
    std::fs::create_dir_all(&args.state_root)
        .with_context(|| format!("create state root {}", args.state_root.display()))?;
    let program = std::env::current_exe().context("find the kstreams-count executable")?;
    let mut cluster = Cluster::new(ClusterSettings {
        program,
        common_args: args.instance_args(&connection.broker),
        state_root: args.state_root.clone(),
        metrics_port_base: args.metrics_port_base,
        static_membership: args.static_membership,
    });
    let load = LoadGenerator::start(client, &args.input_topic, args.rate, args.keys)?;
    let (line_sender, mut lines) = mpsc::unbounded_channel();
    let live = !args.plain && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let mut screen = match live {
        true => Screen::live(line_sender).context("take over the terminal")?,
        false => {
            read_stdin_lines(line_sender);
            Screen::plain((5_000 / args.refresh_ms).max(1))
        }
    };
    for _ in 0..args.instances {
        cluster.add()?;
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(args.refresh_ms));
    // SIGTERM and SIGHUP (a closed terminal) stop as `quit` does: instances stopped cleanly,
    // the terminal given back.
    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("listen for SIGHUP")?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                cluster.refresh().await;
                let (delivered, failed) = load.delivered();
                let header = Header {
                    broker: connection.broker.clone(),
                    input_topic: args.input_topic.clone(),
                    partitions,
                    rate: load.rate(),
                    delivered,
                    failed,
                };
                screen.draw(&mut cluster, &header)?;
            }
            Some(line) = lines.recv() => {
                if line.trim().is_empty() {
                    continue;
                }
                let result = match line.parse::<RunnerCommand>() {
                    Err(error) => Err(anyhow::Error::new(error)),
                    Ok(RunnerCommand::Quit) => break,
                    Ok(RunnerCommand::Help) => Ok(command::HELP.to_string()),
                    Ok(RunnerCommand::Add) => cluster.add().map(|()| "added an instance".into()),
                    Ok(RunnerCommand::Stop(i)) => cluster.stop(i).map(|()| format!("stopping {i}")),
                    Ok(RunnerCommand::Kill(i)) => cluster.kill(i).map(|()| format!("killed {i}")),
                    Ok(RunnerCommand::Start(i)) => cluster.start(i).map(|()| format!("started {i}")),
                    Ok(RunnerCommand::Rate(rate)) => {
                        load.set_rate(rate);
                        Ok(format!("load rate now {rate} records/s"))
                    }
                    Ok(RunnerCommand::Get(key)) => cluster.query(&key).await,
                };
                screen.say(match result {
                    Ok(done) => format!("ok: {done}"),
                    Err(error) => format!("error: {error:#}"),
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
        }
    }
    screen.finish();
    println!("stopping the load generator and the instances (clean shutdown, up to {SHUTDOWN_TIMEOUT:?})");
    let (delivered, failed) = load.stop().await;
    cluster.shutdown(SHUTDOWN_TIMEOUT).await;
    println!(
        "produced {delivered} records ({failed} failed); instance logs and state in {}",
        args.state_root.display()
    );
    match cluster.pauses.summary() {
        Some((median, max)) => println!(
            "partition pauses: {} seen, median {:.2} s, max {:.2} s",
            cluster.pauses.count(),
            median.as_secs_f64(),
            max.as_secs_f64()
        ),
        None => println!("partition pauses: none seen"),
    }
    Ok(())
}
