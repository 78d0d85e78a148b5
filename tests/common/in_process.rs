//! The bridge run in-process (the library's `run`), so that a test can
//! steer librdkafka's mock cluster while requests are in flight.

use std::net::SocketAddr;
use std::time::Duration;

use feishu_kafka_bridge::config::{Config, Secret};
use feishu_kafka_bridge::server::Listeners;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Feishu, ENCRYPT_KEY, TOKEN};

pub const TOPIC: &str = "withdrawn.faults";

/// librdkafka's mock cluster (one broker) with `TOPIC` and its DLQ created.
pub fn mock_cluster() -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, super::PARTITIONS, 1).unwrap();
    cluster
        .create_topic(&format!("{TOPIC}.dlq"), super::PARTITIONS, 1)
        .unwrap();
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

pub struct InProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl InProcess {
    pub async fn start(brokers: String, deadline_ms: u64, props: &[(&str, &str)]) -> InProcess {
        Self::start_config(Self::config(brokers, deadline_ms, props)).await
    }

    /// The configuration `start` uses, for tests that change more of it.
    pub fn config(brokers: String, deadline_ms: u64, props: &[(&str, &str)]) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            encrypt_key: Some(Secret::new(ENCRYPT_KEY)),
            verification_token: Some(Secret::new(TOKEN)),
            topic: TOPIC.into(),
            dlq_topic: format!("{TOPIC}.dlq"),
            kafka_properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(*v)))
                .collect(),
            dedup_capacity: 10_000,
            publish_deadline: Duration::from_millis(deadline_ms),
            readiness_interval: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(5),
            ..Config::with_defaults(&brokers)
        }
    }

    pub async fn start_config(config: Config) -> InProcess {
        let me = Self::spawn_config(config).await;
        me.wait_ready(true, Duration::from_secs(20)).await;
        me
    }

    /// Starts the bridge without waiting for readiness.
    pub async fn spawn_config(config: Config) -> InProcess {
        let listeners = Listeners::bind(&config).await.unwrap();
        let addr = listeners.callback_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(feishu_kafka_bridge::run(config, listeners, async move {
            let _ = rx.await;
        }));
        InProcess {
            addr,
            admin,
            stop: Some(tx),
            task,
            http: reqwest::Client::new(),
        }
    }

    pub async fn ready(&self) -> bool {
        self.http
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    pub async fn wait_ready(&self, want: bool, within: Duration) {
        let give_up = tokio::time::Instant::now() + within;
        while self.ready().await != want {
            assert!(
                tokio::time::Instant::now() < give_up,
                "readiness did not become {want} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn push(&self, feishu: &Feishu, env: &Value) -> (u16, String) {
        let (body, headers) = feishu.sign(env);
        let r = super::signed_post(&self.http, &self.url(), body, &headers)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

impl InProcess {
    pub fn url(&self) -> String {
        format!("http://{}/webhook/event", self.addr)
    }
}
