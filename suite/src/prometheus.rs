//! A real Prometheus server scraping test instances, and reading metrics in text format.

use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, http_get, wait_until};

/// A real Prometheus server (Debian's `prometheus`) scraping loopback targets every second.
pub struct Prometheus {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

/// The `namespace` label of every target [`Prometheus::start`] scrapes.
pub const PROMETHEUS_NAMESPACE: &str = "kstreams-test";
/// The `pod` label of the Nth target [`Prometheus::start`] scrapes: this and N.
pub const PROMETHEUS_POD_PREFIX: &str = "kstreams-count-";

impl Prometheus {
    pub fn start(target_ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Each target labelled as a Kubernetes scrape labels a pod (PodMonitor, scrape.yml):
        // the dashboard's variables and the alerts group by them.
        let targets: String = target_ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                format!(
                    "      - targets: ['127.0.0.1:{port}']\n        labels: {{namespace: {PROMETHEUS_NAMESPACE}, pod: {PROMETHEUS_POD_PREFIX}{index}}}\n"
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: kstreams-count\n    static_configs:\n{targets}"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let binary = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {binary} (apt-get install prometheus, or set PROMETHEUS_BIN): {e}")
            });
        let prometheus = Prometheus {
            port,
            child,
            _dir: dir,
        };
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            matches!(http_get(port, "/-/ready"), Some((200, _)))
        });
        prometheus
    }

    /// The value of an instant query returning one sample, if it returns one.
    pub fn query(&self, expression: &str) -> Option<f64> {
        self.query_result(expression)?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// The series an instant query returns (empty when it returns none); an error (a query
    /// Prometheus refuses) as `Err` with its answer.
    pub fn query_series(&self, expression: &str) -> Result<Vec<serde_json::Value>, String> {
        self.query_result(expression)
            .ok_or_else(|| format!("Prometheus refused or failed `{expression}`"))
    }

    fn query_result(&self, expression: &str) -> Option<Vec<serde_json::Value>> {
        let encoded: String = expression
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums a metric's series in Prometheus text format, keeping series whose label text contains
/// every filter (e.g. `reason="null_key"`).
pub fn metric_sum(text: &str, name: &str, label_filters: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && label_filters.iter().all(|f| labels.contains(f)))
                .then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |total, value| total + value)
}
