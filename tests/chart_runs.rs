//! The chart's Deployment runs: the chart rendered by Helm's own engine
//! (tests/deploy/render_pod.py), the real binary started with the rendered
//! container's environment (ConfigMap and env, as the kubelet assembles it)
//! and the rendered Secret's files laid out under a temporary directory as
//! the volume mount would, against a real broker. Its readiness probe must
//! turn 200, and an event pushed to the rendered callback path must arrive.
//!
//! What differs from a pod, and why: tests/common/pod.rs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_deployment_runs_the_binary_to_ready() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "chart");
    let values = json!({
        "config": {
            "kafkaBrokers": broker.bootstrap,
            "kafkaTopic": topic,
            "kafkaDlqTopic": dlq,
        },
        "secrets": {
            "encryptKey": ENCRYPT_KEY,
            "verificationToken": TOKEN,
            "kafkaProperties": "client.id=from-the-chart-secret\n",
        },
    });
    let pod = pod::render(&[&values.to_string()]);
    let root = pod::TempDir::new("chart");
    assert!(!pod["files"].as_object().unwrap().is_empty(), "{pod}");
    let bridge = pod::spawn(&pod, &root, &broker.bootstrap);
    let readiness = pod["readiness"]["path"].as_str().unwrap();
    assert_eq!(pod["readiness"]["port"], "admin");
    bridge.wait_ready(Duration::from_secs(60));
    let ready = reqwest::get(bridge.admin_url(readiness)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let liveness = pod["liveness"]["path"].as_str().unwrap();
    assert_eq!(
        reqwest::get(bridge.admin_url(liveness))
            .await
            .unwrap()
            .status(),
        200
    );

    // The secrets came from the files: a signed, encrypted event arrives.
    let path = pod["env"]["BRIDGE_EVENT_PATH"].as_str().unwrap();
    let (body, headers) = Feishu::new().sign(&withdrawal("chart-1", "oc_chart"));
    let r = signed_post(&reqwest::Client::new(), &bridge.url(path), body, &headers)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let records = read_topic(&broker.bootstrap, &topic, 1, Duration::from_millis(500));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].key.as_deref(), Some("oc_chart"));
    assert!(!bridge.log_text().contains(ENCRYPT_KEY));
}
