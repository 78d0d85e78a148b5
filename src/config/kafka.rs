//! The Kafka side: brokers, the record and dead-letter topics, and the
//! librdkafka pass-through, which may not touch what the guarantees rest on.

use std::path::PathBuf;

use clap::Args;

use super::{invalid, required, ConfigError};
use crate::secret::Secret;

/// Properties the bridge owns because its guarantees depend on them.
/// Passing any of them through `KAFKA_PROPERTIES` is a start-up error.
const MANAGED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
    "transactional.id",
];

#[derive(Debug, Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port list.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,

    /// Topic of the normalized member records (BRIDGE_EVENT_TYPES), the
    /// chat-member stream. Before 0.2.0 the default was
    /// `feishu.chat.member.withdrawn` (docs/operations.md, Upgrading).
    #[arg(long, env = "KAFKA_TOPIC", default_value = "feishu.chat.members")]
    pub topic: String,

    /// Dead-letter topic for authentic events that cannot be normalized
    /// (default: `<topic>.dlq`).
    #[arg(long, env = "KAFKA_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,

    /// The bridge's own topic, read and written by its replicas only: a
    /// store app's newest `app_ticket`, shared by every replica. Used only
    /// when a listed store app has its `app_secret`.
    #[arg(
        long,
        env = "BRIDGE_INTERNAL_TOPIC",
        default_value = "feishu.bridge.internal"
    )]
    pub internal_topic: String,

    /// Extra librdkafka properties, `key=value`, comma-separated or repeated
    /// (e.g. `security.protocol=SASL_SSL`).
    #[arg(
        long = "kafka-property",
        env = "KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,

    /// File of extra librdkafka properties, one `key=value` per line
    /// (for credentials kept in a Secret volume). `#` starts a comment.
    #[arg(long, env = "KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<PathBuf>,
}

/// The Kafka settings after validation.
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub internal_topic: String,
    pub properties: Vec<(String, Secret)>,
    /// `KAFKA_PROPERTIES_FILE` was set to a file that does not exist.
    pub properties_file_absent: Option<PathBuf>,
}

impl KafkaArgs {
    pub fn validate(&self) -> Result<KafkaConfig, ConfigError> {
        let brokers = required(
            &self.brokers,
            "KAFKA_BROKERS",
            "is required (comma-separated host:port list)",
        )?;
        validate_topic("KAFKA_TOPIC", &self.topic)?;
        let dlq_topic = self
            .dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic));
        validate_topic("KAFKA_DLQ_TOPIC", &dlq_topic)?;
        if dlq_topic == self.topic {
            return Err(invalid("KAFKA_DLQ_TOPIC", "must differ from KAFKA_TOPIC"));
        }
        validate_topic("BRIDGE_INTERNAL_TOPIC", &self.internal_topic)?;
        if self.internal_topic == self.topic || self.internal_topic == dlq_topic {
            return Err(invalid(
                "BRIDGE_INTERNAL_TOPIC",
                "must differ from KAFKA_TOPIC and KAFKA_DLQ_TOPIC (it holds credentials that consumers must not read)",
            ));
        }

        let mut properties = Vec::new();
        for item in &self.kafka_properties {
            if item.trim().is_empty() {
                continue;
            }
            properties.push(parse_property("KAFKA_PROPERTIES", item)?);
        }
        let mut properties_file_absent = None;
        // A Secret volume holds a file per key the Secret has: a Secret made
        // without `kafka.properties` (README's `kubectl create secret`) is a
        // missing file, which means "no credentials from a file", not a crash.
        let text = match &self.kafka_properties_file {
            None => String::new(),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    properties_file_absent = Some(path.clone());
                    String::new()
                }
                Err(e) => {
                    return Err(invalid(
                        "KAFKA_PROPERTIES_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    ))
                }
            },
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            properties.push(parse_property("KAFKA_PROPERTIES_FILE", line)?);
        }
        Ok(KafkaConfig {
            brokers,
            topic: self.topic.clone(),
            dlq_topic,
            internal_topic: self.internal_topic.clone(),
            properties,
            properties_file_absent,
        })
    }
}

pub(super) fn validate_topic(setting: &'static str, topic: &str) -> Result<(), ConfigError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty()
        || topic.len() > 249
        || !topic.chars().all(legal)
        || topic == "."
        || topic == ".."
    {
        return Err(invalid(
            setting,
            format!("{topic:?} is not a legal Kafka topic name ([a-zA-Z0-9._-], 1 to 249 chars)"),
        ));
    }
    Ok(())
}

fn parse_property(setting: &'static str, item: &str) -> Result<(String, Secret), ConfigError> {
    let Some((key, value)) = item.split_once('=') else {
        return Err(invalid(
            setting,
            format!(
                "expected key=value, got an entry without '=' (key {:?})",
                item.trim()
            ),
        ));
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(invalid(setting, "entry with an empty key"));
    }
    if MANAGED_KAFKA_PROPERTIES.contains(&key.as_str()) {
        return Err(invalid(
            setting,
            format!(
                "{key} is managed by the bridge (brokers come from KAFKA_BROKERS; \
                 idempotence, acks=all and the murmur2_random partitioner are required \
                 for its delivery and ordering guarantees)"
            ),
        ));
    }
    Ok((key, Secret::new(value.trim())))
}

#[cfg(test)]
mod tests {
    use super::super::validate_args;

    #[test]
    fn managed_properties_are_refused() {
        let err = validate_args(&["--kafka-property", "acks=1"]).unwrap_err();
        assert_eq!(err.setting, "KAFKA_PROPERTIES");
        assert!(err.to_string().contains("acks"));
        let ok = validate_args(&["--kafka-property", "security.protocol=SASL_SSL"]).expect("valid");
        assert_eq!(ok.kafka_properties[0].0, "security.protocol");
    }

    #[test]
    fn a_missing_properties_file_is_not_used_and_a_bad_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("fkb-kafka-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("kafka.properties");
        let cfg = validate_args(&["--kafka-properties-file", missing.to_str().unwrap()])
            .expect("a missing file is no properties");
        assert!(cfg.kafka_properties.is_empty());
        assert_eq!(cfg.kafka_properties_file_absent.as_deref(), Some(&*missing));
        std::fs::write(&missing, "# creds\nsecurity.protocol=SASL_SSL\n").unwrap();
        let cfg = validate_args(&["--kafka-properties-file", missing.to_str().unwrap()]).unwrap();
        assert_eq!(cfg.kafka_properties[0].0, "security.protocol");
        assert!(cfg.kafka_properties_file_absent.is_none());
        std::fs::write(&missing, "acks=1\n").unwrap();
        let err = validate_args(&["--kafka-properties-file", missing.to_str().unwrap()]);
        assert_eq!(err.unwrap_err().setting, "KAFKA_PROPERTIES_FILE");
        // A directory where the file should be is an error, not "absent".
        let err = validate_args(&["--kafka-properties-file", dir.to_str().unwrap()]);
        assert_eq!(err.unwrap_err().setting, "KAFKA_PROPERTIES_FILE");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn topics_must_be_legal_and_distinct() {
        let err = validate_args(&["--topic", "bad topic"]).unwrap_err();
        assert_eq!(err.setting, "KAFKA_TOPIC");
        let err = validate_args(&["--topic", "t", "--dlq-topic", "t"]).unwrap_err();
        assert_eq!(err.setting, "KAFKA_DLQ_TOPIC");
    }
}
