//! The connection settings every subcommand takes: the broker, and librdkafka client settings
//! from a properties file, `KSTREAMS_CLIENT_*` environment variables and `-X` flags (later
//! wins), so that credentials can come from a Kubernetes Secret instead of the command line.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use kstreams_engine::{normalize_bootstrap_servers, ClientSettings, SettingSource};
use kstreams_engine::{setting_error, tool_client_config};
use rdkafka::config::ClientConfig;

/// Where the broker is when neither `--broker`, `KAFKA_BROKER` nor the properties file says.
const DEFAULT_BROKER: &str = "localhost:9092";

#[derive(Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Kafka broker(s): host or host:port, comma separated (default localhost:9092, or the
    /// properties file's bootstrap.servers).
    #[arg(long = "broker", visible_alias = "bootstrap-server", env = "KAFKA_BROKER", value_parser = broker_arg)]
    pub broker: Option<String>,
    /// librdkafka client settings from a Java-properties file, as Kafka's tools take with
    /// --command-config (security.protocol, sasl.*, ssl.*; sasl.jaas.config is understood).
    #[arg(long, env = "KAFKA_CLIENT_CONFIG_FILE")]
    pub client_config_file: Option<PathBuf>,
    /// A librdkafka client setting, `key=value` (repeatable), as kcat's -X; wins over the file
    /// and over KSTREAMS_CLIENT_<KEY> variables (e.g. KSTREAMS_CLIENT_SASL_PASSWORD).
    #[arg(short = 'X', long = "client-config", value_parser = key_value)]
    pub client_config: Vec<(String, String)>,
}

/// Parses `KAFKA_BROKER`-style addresses: `host` or `host:port` (default port 9092).
pub fn broker_arg(value: &str) -> Result<String, String> {
    normalize_bootstrap_servers(value)
}

pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// The broker and the client settings, resolved from all their sources.
#[derive(Debug, Clone)]
pub struct Connection {
    pub broker: String,
    pub settings: ClientSettings,
}

impl ClientArgs {
    /// Reads the file and the environment, then adds the flags. A `bootstrap.servers` in the
    /// settings is the broker when none is given otherwise; given twice differently, an error.
    pub fn resolve(&self) -> anyhow::Result<Connection> {
        self.resolve_with_env(std::env::vars())
    }

    fn resolve_with_env(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Connection> {
        let mut settings = ClientSettings::new();
        if let Some(path) = &self.client_config_file {
            settings.extend(ClientSettings::read_properties_file(path)?);
        }
        settings.extend(ClientSettings::from_env_vars(env));
        settings.extend(ClientSettings::from_pairs(
            SettingSource::Flag,
            self.client_config.iter().cloned(),
        ));
        let from_settings = match settings.remove("bootstrap.servers") {
            Some(setting) => Some(normalize_bootstrap_servers(&setting.value).map_err(|e| {
                anyhow::anyhow!(
                    "invalid client setting `bootstrap.servers` (from {}): {e}",
                    setting.source
                )
            })?)
            .map(|servers| (servers, setting.source)),
            None => None,
        };
        let broker = match (&self.broker, from_settings) {
            (Some(broker), Some((servers, source))) if *broker != servers => bail!(
                "invalid setting `broker`: --broker/KAFKA_BROKER is {broker} but bootstrap.servers \
                 (from {source}) is {servers}; give the broker once"
            ),
            (Some(broker), _) => broker.clone(),
            (None, Some((servers, _))) => servers,
            (None, None) => DEFAULT_BROKER.to_string(),
        };
        Ok(Connection { broker, settings })
    }

    /// A console tool's client configuration (see `tool_client_config`), checked by librdkafka.
    pub fn tool_config(&self) -> anyhow::Result<(Connection, ClientConfig)> {
        let connection = self.resolve()?;
        let config = tool_client_config(&connection.broker, &connection.settings);
        config
            .create_native_config()
            .map_err(|e| setting_error(&connection.settings, e))
            .context("client settings")?;
        Ok((connection, config))
    }

    /// The flags that hand these settings on to a child `kstreams-count` (the local runner's
    /// instances; the environment is inherited).
    pub fn child_args(&self, broker: &str) -> Vec<String> {
        let mut args = vec!["--broker".to_string(), broker.to_string()];
        if let Some(path) = &self.client_config_file {
            args.push("--client-config-file".into());
            args.push(path.display().to_string());
        }
        for (key, value) in &self.client_config {
            args.push(format!("-X{key}={value}"));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_win_over_environment_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(&file, "linger.ms=1\nsocket.timeout.ms=1000\nacks=all\n").unwrap();
        let args = ClientArgs {
            broker: Some("kafka:9092".into()),
            client_config_file: Some(file.clone()),
            client_config: vec![("linger.ms".into(), "3".into())],
        };
        let connection = args
            .resolve_with_env(env(&[
                ("KSTREAMS_CLIENT_LINGER_MS", "2"),
                ("KSTREAMS_CLIENT_SOCKET_TIMEOUT_MS", "2000"),
            ]))
            .unwrap();
        let settings = &connection.settings;
        assert_eq!(settings.get("linger.ms").unwrap().value, "3");
        assert_eq!(settings.get("socket.timeout.ms").unwrap().value, "2000");
        assert_eq!(
            settings.get("acks").unwrap().source,
            SettingSource::File(file)
        );
        assert_eq!(connection.broker, "kafka:9092");
    }

    #[test]
    fn the_files_bootstrap_servers_is_the_broker_unless_another_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(&file, "bootstrap.servers=broker-1:9093,broker-2\n").unwrap();
        let mut args = ClientArgs {
            client_config_file: Some(file),
            ..ClientArgs::default()
        };
        let connection = args.resolve_with_env(env(&[])).unwrap();
        assert_eq!(connection.broker, "broker-1:9093,broker-2:9092");
        assert!(connection.settings.get("bootstrap.servers").is_none());
        args.broker = Some("broker-1:9093,broker-2:9092".into());
        assert!(args.resolve_with_env(env(&[])).is_ok());
        args.broker = Some("elsewhere:9092".into());
        let error = args.resolve_with_env(env(&[])).unwrap_err().to_string();
        assert!(error.contains("give the broker once"), "{error}");
        assert_eq!(
            ClientArgs::default()
                .resolve_with_env(env(&[]))
                .unwrap()
                .broker,
            DEFAULT_BROKER
        );
    }
}
