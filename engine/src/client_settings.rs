//! The user's Kafka client settings as given (properties file, environment, `-X`): where
//! each came from, which hold secrets, and how a Java client's properties file reads. A leaf:
//! what the engine makes of them is `clients`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// Prefix of environment variables that carry client settings:
/// `KSTREAMS_CLIENT_SASL_PASSWORD=...` is `sasl.password=...`.
pub const CLIENT_ENV_PREFIX: &str = "KSTREAMS_CLIENT_";

/// Where a client setting came from; errors name it (and never show a secret's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingSource {
    /// A Java-properties file (`--client-config-file`).
    File(PathBuf),
    /// An environment variable (`KSTREAMS_CLIENT_*`).
    Env(String),
    /// A `-X key=value` flag.
    Flag,
    /// Set by the program embedding the engine (tests, benchmarks).
    Program,
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingSource::File(path) => write!(f, "file {}", path.display()),
            SettingSource::Env(name) => write!(f, "environment variable {name}"),
            SettingSource::Flag => f.write_str("-X"),
            SettingSource::Program => f.write_str("the program's settings"),
        }
    }
}

/// One librdkafka setting given by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSetting {
    pub key: String,
    pub value: String,
    pub source: SettingSource,
}

impl ClientSetting {
    /// `key=value (source)`, with the value hidden for secrets.
    pub fn describe(&self) -> String {
        let value: &str = if is_secret(&self.key) {
            "***"
        } else {
            &self.value
        };
        format!("{}={value} ({})", self.key, self.source)
    }
}

/// Whether a setting's value must never be logged or shown in an error.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "ssl.key.pem",
        "ssl_key",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// The user's librdkafka settings, applied to every client the engine creates. Later entries
/// win over earlier ones with the same key; the app adds them file first, then environment,
/// then `-X`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    entries: Vec<ClientSetting>,
}

impl ClientSettings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings given as `(key, value)` pairs from one source.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        source: SettingSource,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut settings = Self::new();
        for (key, value) in pairs {
            settings.push(key, value, source.clone());
        }
        settings
    }

    pub fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        source: SettingSource,
    ) {
        self.entries.push(ClientSetting {
            key: key.into().trim().to_string(),
            value: value.into(),
            source,
        });
    }

    /// Appends `other`'s settings after these (so they win).
    pub fn extend(&mut self, other: ClientSettings) {
        self.entries.extend(other.entries);
    }

    /// The settings from `KSTREAMS_CLIENT_*` variables among `vars` (e.g. `std::env::vars()`):
    /// the rest of the name, lower-cased, with `_` read as `.`.
    pub fn from_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut found: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.len() > CLIENT_ENV_PREFIX.len())
            .filter(|(name, _)| name.starts_with(CLIENT_ENV_PREFIX))
            .collect();
        // The environment has no order; sort so that the result does not depend on it.
        found.sort();
        let mut settings = Self::new();
        for (name, value) in found {
            let key = name[CLIENT_ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace('_', ".");
            settings.push(key, value, SettingSource::Env(name));
        }
        settings
    }

    /// Reads a Java-properties file, as Kafka's tools take with `--command-config`: an existing
    /// `client.properties` works. Java-client keys with a librdkafka equivalent are translated
    /// (`sasl.jaas.config` to `sasl.username`/`sasl.password`, a PEM trust store to
    /// `ssl.ca.location`); Java-only keys with no meaning here (serializers) are dropped.
    pub fn read_properties_file(path: &Path) -> Result<Self> {
        let file_error = |reason: String| EngineError::ClientConfigFile {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
        let properties: BTreeMap<String, String> =
            java_properties::read(std::io::BufReader::new(file))
                .map_err(|e| file_error(e.to_string()))?
                .into_iter()
                .collect();
        let source = SettingSource::File(path.to_path_buf());
        let mut settings = Self::new();
        let truststore_is_pem = properties
            .get("ssl.truststore.type")
            .is_some_and(|t| t.eq_ignore_ascii_case("PEM"));
        for (key, value) in &properties {
            match key.as_str() {
                "sasl.jaas.config" => {
                    let (username, password) = jaas_credentials(value)
                        .map_err(|reason| file_error(format!("`sasl.jaas.config`: {reason}")))?;
                    settings.push("sasl.username", username, source.clone());
                    settings.push("sasl.password", password, source.clone());
                }
                "ssl.truststore.location" if truststore_is_pem => {
                    settings.push("ssl.ca.location", value, source.clone())
                }
                "ssl.truststore.location" => {
                    return Err(file_error(
                        "`ssl.truststore.location` names a JKS/PKCS12 trust store, which \
                         librdkafka cannot read; give the CA certificates as a PEM file with \
                         `ssl.ca.location` (or set `ssl.truststore.type=PEM`)"
                            .into(),
                    ))
                }
                "ssl.truststore.type" | "ssl.truststore.password" => {}
                key if JAVA_ONLY_KEYS.contains(&key) => {}
                _ => settings.push(key.as_str(), value.as_str(), source.clone()),
            }
        }
        Ok(settings)
    }

    /// The effective settings: for each key, the last one given.
    pub fn effective(&self) -> Vec<&ClientSetting> {
        let mut last: BTreeMap<&str, &ClientSetting> = BTreeMap::new();
        for setting in &self.entries {
            last.insert(setting.key.as_str(), setting);
        }
        last.into_values().collect()
    }

    /// The effective setting for `key`.
    pub fn get(&self, key: &str) -> Option<&ClientSetting> {
        self.entries.iter().rev().find(|s| s.key == key)
    }

    /// Removes every setting for `key` (e.g. `bootstrap.servers` once the app has used it).
    pub fn remove(&mut self, key: &str) -> Option<ClientSetting> {
        let last = self.get(key).cloned();
        self.entries.retain(|s| s.key != key);
        last
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One line for the start-up log: every effective setting, secrets hidden.
    pub fn describe(&self) -> String {
        let effective = self.effective();
        if effective.is_empty() {
            return "none".into();
        }
        effective
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Java-client keys that have no meaning for librdkafka and are dropped from a properties file.
const JAVA_ONLY_KEYS: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "client.dns.lookup",
    "sasl.login.callback.handler.class",
    "sasl.client.callback.handler.class",
    "ssl.keystore.type",
    "ssl.key.password",
    "ssl.keystore.password",
    "basic.auth.credentials.source",
    "basic.auth.user.info",
    "schema.registry.url",
];

/// `username` and `password` from a JAAS line such as
/// `org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";`
fn jaas_credentials(jaas: &str) -> std::result::Result<(String, String), String> {
    let jaas = jaas.trim();
    let module = jaas.split_whitespace().next().unwrap_or_default();
    if !(module.ends_with("PlainLoginModule") || module.ends_with("ScramLoginModule")) {
        return Err(format!(
            "login module `{module}` is not supported; for PLAIN or SCRAM use its username and \
             password, for OAUTHBEARER the `sasl.oauthbearer.*` settings"
        ));
    }
    let mut fields = BTreeMap::new();
    let mut rest = jaas[module.len()..].trim();
    rest = rest.strip_prefix("required").unwrap_or(rest).trim();
    while let Some((name, after)) = rest.split_once('=') {
        let after = after.trim_start();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| format!("unterminated quote after `{}=`", name.trim()))?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| c.is_whitespace() || c == ';')
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        fields.insert(name.trim().to_string(), value.to_string());
        rest = remainder.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
    }
    match (fields.remove("username"), fields.remove("password")) {
        (Some(username), Some(password)) => Ok((username, password)),
        _ => Err("no username=\"...\" password=\"...\" in it".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_map_to_keys() {
        let settings = ClientSettings::from_env_vars([
            (
                "KSTREAMS_CLIENT_SASL_PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
            (
                "KSTREAMS_CLIENT_SECURITY_PROTOCOL".to_string(),
                "SASL_SSL".to_string(),
            ),
            ("KSTREAMS_CLIENT_".to_string(), "ignored".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        let effective = settings.effective();
        assert_eq!(effective.len(), 2);
        let password = settings.get("sasl.password").unwrap();
        assert_eq!(password.value, "s3cret");
        assert_eq!(
            password.source,
            SettingSource::Env("KSTREAMS_CLIENT_SASL_PASSWORD".into())
        );
        assert_eq!(settings.get("security.protocol").unwrap().value, "SASL_SSL");
        assert!(!settings.describe().contains("s3cret"));
    }

    #[test]
    fn later_sources_win() {
        let mut settings = ClientSettings::from_pairs(SettingSource::Program, [("linger.ms", "1")]);
        settings.extend(ClientSettings::from_pairs(
            SettingSource::Flag,
            [("linger.ms", "7")],
        ));
        assert_eq!(settings.get("linger.ms").unwrap().value, "7");
        assert_eq!(settings.effective().len(), 1);
    }

    #[test]
    fn a_jks_trust_store_or_unknown_login_module_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.properties");
        std::fs::write(&path, "ssl.truststore.location=/etc/kafka/truststore.jks\n").unwrap();
        let error = ClientSettings::read_properties_file(&path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("ssl.ca.location"), "{error}");
        std::fs::write(
            &path,
            "sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required;\n",
        )
        .unwrap();
        let error = ClientSettings::read_properties_file(&path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("Krb5LoginModule"), "{error}");
        let error = ClientSettings::read_properties_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing"), "{error}");
    }

    #[test]
    fn jaas_values_may_be_unquoted() {
        assert_eq!(
            jaas_credentials("x.PlainLoginModule required username=u password=p;").unwrap(),
            ("u".to_string(), "p".to_string())
        );
    }
}
