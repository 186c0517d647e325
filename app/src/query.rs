//! `kstreams-count query`: asks any instance for a key's count (it forwards to the owner), or
//! pages through every key of the group, from the command line.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hyper::StatusCode;
use kstreams_engine::{key_path, keys_path, ErrorAnswer, KeyAnswer, KeysPage};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The key to look up (omit it with --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    key: Option<String>,
    /// Every key of the store across the group, in key order, a page at a time.
    #[arg(long)]
    all: bool,
    /// With --all: start at this key.
    #[arg(long, requires = "all")]
    from: Option<String>,
    /// With --all: keys per request.
    #[arg(long, default_value_t = 1000, requires = "all")]
    page_size: usize,
    /// Any instance's HTTP address (its --metrics-address; in Kubernetes, the query Service).
    #[arg(long, env = "QUERY_SERVER", default_value = "localhost:9102")]
    server: String,
    /// The state store to read.
    #[arg(long, env = "STORE_NAME", default_value = "count-store")]
    store: String,
    /// Accept an answer from a standby replica (with its lag) when the owner cannot answer.
    #[arg(long)]
    stale: bool,
    /// Print the answers as JSON, as the API gives them.
    #[arg(long)]
    json: bool,
    /// How long to keep asking while the key's partition is restoring or moving (503).
    #[arg(long, default_value_t = 30_000)]
    wait_ms: u64,
}

/// `GET path`, asked again while the answer is 503 (honouring `Retry-After`) until the wait is
/// over.
async fn ask(args: &QueryArgs, path: &str) -> anyhow::Result<(StatusCode, hyper::body::Bytes)> {
    let deadline = Instant::now() + Duration::from_millis(args.wait_ms);
    loop {
        let (status, retry_after, body) =
            crate::http_client::get(&args.server, path, REQUEST_TIMEOUT).await?;
        let pause = Duration::from_secs(retry_after.unwrap_or(1));
        if status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() + pause > deadline {
            return Ok((status, body));
        }
        let why: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
        eprintln!(
            "unavailable ({}); asking again in {pause:?}",
            why.map_or_else(|| "no reason given".into(), |w| w.error)
        );
        tokio::time::sleep(pause).await;
    }
}

fn failure(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let why = serde_json::from_slice::<ErrorAnswer>(body)
        .map(|answer| answer.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
    anyhow::anyhow!("{status}: {why}")
}

pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    match &args.key {
        Some(key) => one_key(&args, key).await,
        None => all_keys(&args).await,
    }
}

async fn one_key(args: &QueryArgs, key: &str) -> anyhow::Result<()> {
    let path = format!("{}?stale={}", key_path(&args.store, key), args.stale);
    let (status, body) = ask(args, &path).await?;
    if status == StatusCode::NOT_FOUND && args.json {
        println!("{}", String::from_utf8_lossy(&body));
    }
    if status != StatusCode::OK {
        return Err(failure(status, &body));
    }
    let answer: KeyAnswer = serde_json::from_slice(&body).context("reading the answer")?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    println!("{} {}", answer.key, answer.value);
    let source = match (answer.from_owner, answer.lag) {
        (true, _) => "its owner".to_string(),
        (false, Some(lag)) => format!("a standby {lag} changelog records behind"),
        (false, None) => "a standby (lag not yet measured)".to_string(),
    };
    eprintln!(
        "partition {}, answered by {} ({source}){}",
        answer.partition,
        answer.answered_by,
        if answer.forwarded {
            format!(", forwarded by {}", args.server)
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn all_keys(args: &QueryArgs) -> anyhow::Result<()> {
    if args.page_size == 0 || args.page_size > kstreams_engine::MAX_PAGE {
        bail!("--page-size must be 1 to {}", kstreams_engine::MAX_PAGE);
    }
    let mut from = args.from.clone();
    let mut printed = 0usize;
    loop {
        let path = keys_path(&args.store, from.as_deref(), args.page_size);
        let (status, body) = ask(args, &path).await?;
        if status != StatusCode::OK {
            return Err(failure(status, &body));
        }
        let page: KeysPage = serde_json::from_slice(&body).context("reading a page")?;
        for entry in &page.entries {
            match args.json {
                true => println!("{}", serde_json::to_string(entry)?),
                false => println!("{} {}", entry.key, entry.value),
            }
        }
        printed += page.entries.len();
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    eprintln!("{printed} keys");
    Ok(())
}
