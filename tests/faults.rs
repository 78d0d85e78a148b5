//! Fault injection with librdkafka's own mock cluster (in-process, over
//! TCP): slow acks past the publish deadline, failed deliveries, a full
//! producer queue and a broker outage. The bridge runs in-process here so
//! that the cluster can be steered while requests are in flight.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{metric, read_topic, withdrawal, Feishu, ENCRYPT_KEY, TOKEN};
use feishu_kafka_bridge::config::{Config, Secret};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;
use tokio::sync::oneshot;

const TOPIC: &str = "withdrawn.faults";

struct InProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl InProcess {
    async fn start(brokers: String, deadline_ms: u64, props: &[(&str, &str)]) -> InProcess {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
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
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(feishu_kafka_bridge::run(config, listener, async move {
            let _ = rx.await;
        }));
        let me = InProcess {
            addr,
            stop: Some(tx),
            task,
            http: reqwest::Client::new(),
        };
        me.wait_ready(true, Duration::from_secs(20)).await;
        me
    }

    async fn ready(&self) -> bool {
        self.http
            .get(format!("http://{}/readyz", self.addr))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    async fn wait_ready(&self, want: bool, within: Duration) {
        let give_up = tokio::time::Instant::now() + within;
        while self.ready().await != want {
            assert!(
                tokio::time::Instant::now() < give_up,
                "readiness did not become {want} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn push(&self, feishu: &Feishu, env: &Value) -> (u16, String) {
        let (body, headers) = feishu.sign(env);
        let mut req = self
            .http
            .post(format!("http://{}/webhook/event", self.addr))
            .body(body);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, common::PARTITIONS, 1).unwrap();
    cluster
        .create_topic(&format!("{TOPIC}.dlq"), common::PARTITIONS, 1)
        .unwrap();
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_the_deadline_turns_the_retry_into_a_duplicate() {
    let (cluster, bootstrap) = cluster();
    let bridge = InProcess::start(bootstrap.clone(), 500, &[]).await;
    let feishu = Feishu::new();
    let env = withdrawal("slow-1", "oc_slow");

    cluster
        .broker_round_trip_time(1, Duration::from_millis(2500))
        .unwrap();
    let started = std::time::Instant::now();
    let (status, body) = bridge.push(&feishu, &env).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered after {:?}",
        started.elapsed()
    );

    // A copy arriving while the first is still in flight waits, then gets 503 too.
    let (status, _) = bridge.push(&feishu, &env).await;
    assert_eq!(status, 503);

    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    // Wait for the late ack; then Feishu's retry is a duplicate.
    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = bridge.push(&feishu, &env).await;
        if status == 200 {
            assert_eq!(body, r#"{"msg":"success"}"#);
            break;
        }
        assert!(std::time::Instant::now() < give_up, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = bridge.metrics().await;
    assert_eq!(
        metric(&m, "feishu_bridge_requests_total{outcome=\"published\"}"),
        0.0
    );
    assert!(metric(&m, "feishu_bridge_requests_total{outcome=\"duplicate\"}") >= 1.0);
    bridge.stop().await;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, TOPIC, 1, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(
        records.len(),
        1,
        "exactly one record for a slow-acked event"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_answers_503_and_the_retry_publishes() {
    let (cluster, bootstrap) = cluster();
    let bridge = InProcess::start(bootstrap.clone(), 2000, &[("message.timeout.ms", "1000")]).await;
    let feishu = Feishu::new();
    let env = withdrawal("fail-1", "oc_fail");

    // Every produce attempt for a while fails with a retriable error, so
    // librdkafka gives up when message.timeout.ms runs out.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 200],
    );
    let (status, body) = bridge.push(&feishu, &env).await;
    assert_eq!(status, 503, "{body}");
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = bridge.push(&feishu, &env).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "retry never published");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = bridge.metrics().await;
    assert!(
        metric(
            &m,
            "feishu_bridge_kafka_delivery_errors_total{kind=\"retriable\"}"
        ) >= 1.0,
        "{m}"
    );
    bridge.stop().await;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, TOPIC, 1, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 1);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_not_ready_then_queue_full_503_then_recovery() {
    let (cluster, bootstrap) = cluster();
    let bridge = InProcess::start(
        bootstrap.clone(),
        500,
        &[("queue.buffering.max.messages", "1")],
    )
    .await;
    let feishu = Feishu::new();

    cluster.broker_down(1).unwrap();
    bridge.wait_ready(false, Duration::from_secs(15)).await;

    let (status, _) = bridge.push(&feishu, &withdrawal("down-1", "oc_down")).await;
    assert_eq!(status, 503);
    // The queue holds one message: the next event is refused at once.
    let started = std::time::Instant::now();
    let (status, body) = bridge.push(&feishu, &withdrawal("down-2", "oc_down")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("queue is full"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(400));
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_kafka_delivery_errors_total{kind=\"queue_full\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "feishu_bridge_producer_queue_messages"), 1.0);

    cluster.broker_up(1).unwrap();
    bridge.wait_ready(true, Duration::from_secs(20)).await;
    // Feishu's retries land: the first as a duplicate of its late ack, the second as new.
    for id in ["down-1", "down-2"] {
        let give_up = std::time::Instant::now() + Duration::from_secs(15);
        while bridge.push(&feishu, &withdrawal(id, "oc_down")).await.0 != 200 {
            assert!(std::time::Instant::now() < give_up, "{id} never landed");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    bridge.stop().await;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, TOPIC, 2, Duration::from_secs(1))
    })
    .await
    .unwrap();
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r.value["event_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["down-1", "down-2"]);
    drop(cluster);
}
