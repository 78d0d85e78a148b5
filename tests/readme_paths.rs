//! README's deploy paths, followed literally: the commands are read from
//! README.md itself (tests/deploy/readme.py), not copied here.
//!
//! For each way README deploys (Helm with its `--set` flags, and
//! `kubectl apply -k`): the Deployment is rendered (Helm's own engine, and
//! `kubectl kustomize`), its Secret is the one README's `kubectl create
//! secret` makes (exactly its keys; README's `…` placeholders become the
//! test's key and token), the topics are the ones README's step 1 names,
//! created on a broker of the path's own, and the real binary starts with
//! the rendered environment and files (tests/common/pod.rs says what
//! differs from a pod). It must become ready, and an event of every type
//! README's step 2 tells the user to subscribe to must be published on the
//! member topic, with the defaults the manifests ship.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use feishu_kafka_bridge::record::MemberKind;
use serde_json::Value;

/// README's `kubectl create secret` keys, with the test's values.
fn fill_secret(pod: &mut Value) {
    for (path, value) in pod["files"].as_object_mut().unwrap() {
        let key = path.rsplit('/').next().unwrap();
        *value = match key {
            "encrypt-key" => ENCRYPT_KEY.into(),
            "verification-token" => TOKEN.into(),
            other => panic!("README's Secret has a key this test does not know: {other}"),
        };
    }
}

/// An event of `event_type` in `chat`, built on Feishu's documented sample.
fn event_of(event_type: &str, event_id: &str, chat: &str) -> Value {
    let kind = MemberKind::from_event_type(event_type)
        .unwrap_or_else(|| panic!("README asks to subscribe to {event_type}, not a member type"));
    let mut v = withdrawal(event_id, chat);
    v["header"]["event_type"] = event_type.into();
    if !kind.has_users() {
        v["event"].as_object_mut().unwrap().remove("users");
    }
    v
}

async fn follow(path: &str) {
    let readme = pod::render(&["--readme"]);
    let mut pod = readme[path].clone();
    let secret = &readme["secret"];
    assert_eq!(
        secret["data"].as_object().unwrap().len(),
        pod["files"].as_object().unwrap().len(),
        "the pod mounts README's Secret with its keys: {pod}"
    );
    fill_secret(&mut pod);

    // Step 1: the topics README tells the user to create.
    let broker = Broker::start();
    let topics: Vec<&str> = readme["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    broker.create_topics(&topics);
    let env = &pod["env"];
    let topic = env["KAFKA_TOPIC"].as_str().unwrap();
    let dlq = env["KAFKA_DLQ_TOPIC"].as_str().unwrap();
    assert!(
        topics.contains(&topic) && topics.contains(&dlq),
        "README's step 1 names {topics:?}, the {path} deploy writes {topic} and {dlq}"
    );

    let root = pod::TempDir::new(&format!("readme-{path}"));
    let bridge = pod::spawn(&pod, &root, &broker.bootstrap);
    bridge.wait_ready(Duration::from_secs(60));
    let readiness = pod["readiness"]["path"].as_str().unwrap();
    assert_eq!(
        reqwest::get(bridge.admin_url(readiness))
            .await
            .unwrap()
            .status(),
        200
    );

    // Step 2's events, each signed and encrypted as Feishu sends them.
    let types: Vec<&str> = readme["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types.len(), MemberKind::ALL.len(), "{types:?}");
    let url = bridge.url(env["BRIDGE_EVENT_PATH"].as_str().unwrap());
    let client = reqwest::Client::new();
    for (i, event_type) in types.iter().enumerate() {
        let (body, headers) =
            Feishu::new().sign(&event_of(event_type, &format!("{path}-{i}"), "oc_readme"));
        let r = signed_post(&client, &url, body, &headers)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{event_type}: {}", r.text().await.unwrap());
    }
    let records = read_topic(
        &broker.bootstrap,
        topic,
        types.len(),
        Duration::from_millis(500),
    );
    let published: BTreeSet<&str> = records
        .iter()
        .map(|r| r.headers["event_type"].as_str())
        .collect();
    assert_eq!(
        published,
        types.iter().copied().collect(),
        "every type README says to subscribe to is published by default"
    );
    assert!(records
        .iter()
        .all(|r| r.key.as_deref() == Some("oc_readme")));
    assert!(read_topic(&broker.bootstrap, dlq, 0, Duration::from_millis(300)).is_empty());
    assert!(!bridge.log_text().contains(ENCRYPT_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_helm_install_with_readme_secret_publishes_every_subscribed_type() {
    follow("helm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_kubectl_apply_with_readme_secret_publishes_every_subscribed_type() {
    follow("kustomize").await;
}
