//! The written topics' `min.insync.replicas`, asked of the cluster
//! (DescribeConfigs): with it, readiness knows from metadata alone that a
//! partition cannot commit records (fewer replicas in sync than that), the
//! moment it happens and whether the bridge is writing or not; without it,
//! only once a record has failed. The answer is kept and asked again now
//! and then (a topic's setting can change while the bridge runs).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{info, warn};

use super::health::Observer;

/// A known answer is asked again this often.
const REFRESH: Duration = Duration::from_secs(300);
/// A failed question (denied, unsupported, no answer) is asked again this often.
const RETRY: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub struct MinInsync {
    admin: AdminClient<Observer>,
    known: RwLock<HashMap<String, usize>>,
}

impl MinInsync {
    pub fn new(config: &ClientConfig, observer: Observer) -> Result<Self, KafkaError> {
        Ok(MinInsync {
            admin: config.create_with_context(observer)?,
            known: RwLock::new(HashMap::new()),
        })
    }

    /// What is known, by topic.
    pub fn known(&self) -> HashMap<String, usize> {
        self.known.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks for `topics`' setting now and then, for ever: every
    /// [`REFRESH`] once known, every [`RETRY`] while the question fails
    /// (said once in a warning until it succeeds).
    pub async fn watch(&self, topics: &[&str]) {
        let mut failing = false;
        loop {
            match self.ask(topics).await {
                Ok(found) => {
                    let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
                    if *known != found {
                        info!(min_insync_replicas = ?found, "the written topics' min.insync.replicas");
                    }
                    *known = found;
                    failing = false;
                }
                Err(why) => {
                    if !failing {
                        warn!(
                            reason = %why,
                            "cannot read the topics' min.insync.replicas (grant DescribeConfigs on them, docs/kafka.md): the bridge then learns that Kafka cannot commit records only when one fails"
                        );
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(if failing { RETRY } else { REFRESH }).await;
        }
    }

    async fn ask(&self, topics: &[&str]) -> Result<HashMap<String, usize>, String> {
        let resources: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let answers = self
            .admin
            .describe_configs(&resources, &options)
            .await
            .map_err(|e| e.to_string())?;
        let mut found = HashMap::new();
        for (topic, answer) in topics.iter().zip(answers) {
            let resource = answer.map_err(|code| match code {
                RDKafkaErrorCode::TopicAuthorizationFailed => {
                    format!("DescribeConfigs on topic \"{topic}\" denied")
                }
                code => format!("topic \"{topic}\": {code}"),
            })?;
            let value = resource
                .get("min.insync.replicas")
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!("topic \"{topic}\": no min.insync.replicas in the answer")
                })?;
            found.insert((*topic).to_owned(), value);
        }
        Ok(found)
    }
}
