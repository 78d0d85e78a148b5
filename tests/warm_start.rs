//! The follower's warm start under faults, on librdkafka's mock cluster
//! (in-process, so the cluster can be steered): a broker that is down when
//! the replica starts, and a warm start that cannot finish within its budget.

mod common;

use std::time::{Duration, Instant};

use common::in_process::{mock_cluster, InProcess};
use common::{ids_learned, metric, webhook_outcome, withdrawal, Feishu};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;

fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| withdrawal(&format!("{prefix}-{i}"), &format!("oc_{prefix}_{}", i % 5)))
        .collect()
}

/// Publishes `envs` through a replica that then stops, so the next one
/// has only the topic to learn them from.
async fn published_by_an_earlier_replica(bootstrap: &str, envs: &[Value]) {
    let feishu = Feishu::new();
    let earlier = InProcess::start(bootstrap.to_owned(), 2000, &[]).await;
    for env in envs {
        assert_eq!(earlier.push(&feishu, env).await.0, 200);
    }
    earlier.stop().await;
}

async fn outcomes(bridge: &InProcess) -> (f64, f64) {
    let m = bridge.metrics().await;
    (
        webhook_outcome(&m, "published"),
        webhook_outcome(&m, "duplicate"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_up_holds_readiness_until_the_warm_start_has_read() {
    let (cluster, bootstrap) = mock_cluster();
    let envs = events("down", 20);
    published_by_an_earlier_replica(&bootstrap, &envs).await;

    cluster.broker_down(1).unwrap();
    let bridge = InProcess::spawn_config(InProcess::config(bootstrap.clone(), 2000, &[])).await;
    let feishu = Feishu::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!bridge.ready().await);
    // Nothing can be claimed meanwhile: a retry now would be answered 503.
    assert_eq!(bridge.push(&feishu, &envs[0]).await.0, 503);

    cluster.broker_up(1).unwrap();
    bridge.wait_ready(true, Duration::from_secs(20)).await;
    let m = bridge.metrics().await;
    assert_eq!(ids_learned(&m, "warm_start"), 20.0);
    assert_eq!(
        metric(&m, "feishu_bridge_dedup_warm_start_budget_exceeded"),
        0.0
    );
    for env in &envs {
        assert_eq!(bridge.push(&feishu, env).await.0, 200);
    }
    assert_eq!(outcomes(&bridge).await, (0.0, 20.0));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_budget_the_warm_start_lets_the_replica_be_ready_and_says_so() {
    let (cluster, bootstrap) = mock_cluster();
    let envs = events("budget", 20);
    published_by_an_earlier_replica(&bootstrap, &envs).await;

    // Every fetch fails: the warm start cannot read a record.
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5000],
    );
    let config = feishu_kafka_bridge::config::Config {
        dedup_warm_start_budget: Duration::from_secs(1),
        ..InProcess::config(bootstrap.clone(), 2000, &[])
    };
    let started = Instant::now();
    let bridge = InProcess::spawn_config(config).await;
    bridge.wait_ready(true, Duration::from_secs(15)).await;
    let took = started.elapsed();
    let m = bridge.metrics().await;
    println!("warm start with failing fetches, budget 1 s: ready after {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "ready before the budget ran out"
    );
    assert_eq!(
        metric(&m, "feishu_bridge_dedup_warm_start_budget_exceeded"),
        1.0
    );
    assert!(metric(&m, "feishu_bridge_dedup_warm_start_duration_seconds") >= 1.0);

    // The rest is read in the background once the broker serves again.
    cluster.clear_request_errors(RDKafkaApiKey::Fetch);
    let give_up = Instant::now() + Duration::from_secs(20);
    while ids_learned(&bridge.metrics().await, "warm_start") < 20.0 {
        assert!(Instant::now() < give_up, "the backlog was never read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let feishu = Feishu::new();
    for env in &envs {
        assert_eq!(bridge.push(&feishu, env).await.0, 200);
    }
    assert_eq!(outcomes(&bridge).await, (0.0, 20.0));
    bridge.stop().await;
}
