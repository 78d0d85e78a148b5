//! The bridge against Apache Kafka as users run it (tests/common/kafka.rs):
//! a controller and three brokers, replication factor 3 and
//! min.insync.replicas 2, clients over SASL_SSL with SCRAM-SHA-512 held to
//! ACLs. The bridge's properties are docs/kafka.md's block as written (the
//! user, password and CA path filled in, as a user would); a separate
//! consumer user reads the records back. Faults under load are in
//! tests/apache_kafka_faults.rs, with a cluster of their own.

// Each test binary uses part of the example's fold.
#[allow(dead_code)]
#[path = "examples/membership/chat_members.rs"]
mod chat_members;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::kafka::{joined, Kafka, Mode};
use common::openapi_stand_in::{OpenApiStandIn, APP_ID, APP_SECRET};
use common::*;
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_millis(1500);

/// One cluster for this file's tests: none of them stops a broker.
fn cluster() -> &'static Kafka {
    static CLUSTER: OnceLock<Kafka> = OnceLock::new();
    CLUSTER.get_or_init(|| Kafka::start(Mode::Cluster))
}

/// A member topic and its dead-letter topic under the prefix the bridge's
/// user is granted.
fn topics_on(kafka: &Kafka, test: &str) -> (String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let topic = format!(
        "{}{test}.{}.{n}",
        kafka.env("KAFKA_TOPIC_PREFIX"),
        std::process::id()
    );
    let dlq = format!("{topic}.dlq");
    kafka.create_topics(&[&topic, &dlq]);
    (topic, dlq)
}

/// docs/kafka.md's SASL_SSL properties block, as its lines.
fn documented_block() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kafka.md"))
        .expect("docs/kafka.md");
    let marker = "<!-- kafka.properties for SASL_SSL";
    let after = &doc[doc
        .find(marker)
        .expect("the block's marker in docs/kafka.md")..];
    let body = after
        .split_once("```properties\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a ```properties block after the marker")
        .0;
    body.lines().map(str::to_owned).collect()
}

/// The documented block with what a user fills in: the user, the password,
/// and (unless `ca` is None, keeping the documented path) the CA's path.
fn documented_properties(user: &str, password: &str, ca: Option<&str>) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for line in documented_block() {
        let (key, value) = line.split_once('=').expect("key=value");
        seen.insert(key.to_owned());
        let value = match key {
            "sasl.username" => user,
            "sasl.password" => {
                assert_eq!(value, "…", "the documented password is a placeholder");
                password
            }
            "ssl.ca.location" => ca.unwrap_or(value),
            "security.protocol" => {
                assert_eq!(value, "SASL_SSL");
                value
            }
            "sasl.mechanism" => {
                assert_eq!(value, "SCRAM-SHA-512");
                value
            }
            other => panic!("docs/kafka.md's block has a key this test does not know: {other}"),
        };
        out.push_str(&format!("{key}={value}\n"));
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    out
}

fn bridge_password(kafka: &Kafka) -> String {
    kafka.env("KAFKA_BRIDGE_PASSWORD").to_owned()
}

/// The documented properties for the bridge's user, filled in, in a file
/// under `dir` as a Secret's `kafka.properties` would hold them.
fn properties_file(kafka: &Kafka, dir: &pod::TempDir) -> std::path::PathBuf {
    let file = dir
        .0
        .join(format!("kafka-{}.properties", rand::random::<u32>()));
    std::fs::write(
        &file,
        documented_properties(
            kafka.env("KAFKA_BRIDGE_USER"),
            &bridge_password(kafka),
            Some(kafka.env("KAFKA_CA")),
        ),
    )
    .unwrap();
    file
}

/// The bridge with the documented properties in a file, as a Secret's
/// `kafka.properties` would hold them.
fn start_bridge(kafka: &Kafka, dir: &pod::TempDir, topic: &str, extra: &[(&str, &str)]) -> Bridge {
    let file = properties_file(kafka, dir);
    let mut env = vec![("KAFKA_PROPERTIES_FILE", file.to_str().unwrap())];
    env.extend_from_slice(extra);
    Bridge::start(&kafka.bootstrap(), topic, &env)
}

fn read_back(kafka: &Kafka, topic: &str, expect: usize) -> Vec<Record> {
    read_topic_with(&kafka.reader_config(), topic, expect, SETTLE)
}

async fn readyz(bridge: &Bridge) -> (u16, String) {
    let r = reqwest::get(bridge.admin_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until `/readyz` answers 503 with a body that contains every one
/// of `needles`; returns the body.
async fn wait_not_ready_saying(bridge: &Bridge, needles: &[&str]) -> String {
    let give_up = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, body) = readyz(bridge).await;
        if status == 503 && needles.iter().all(|n| body.contains(n)) {
            return body;
        }
        assert!(
            Instant::now() < give_up,
            "/readyz never said {needles:?}; last: {status} {body}; logs: {}",
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_sasl_ssl_properties_publish_and_the_consumer_user_reads_back() {
    let kafka = cluster();
    let dir = pod::TempDir::new("sasl-ssl");
    let (topic, _) = topics_on(kafka, "e2e");
    let bridge = start_bridge(kafka, &dir, &topic, &[]);
    let r = Feishu::new()
        .push(&bridge, &withdrawal("ak-e2e-1", "oc_ak_e2e"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let records = read_back(kafka, &topic, 1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].key.as_deref(), Some("oc_ak_e2e"));
    assert_eq!(records[0].headers["event_id"], "ak-e2e-1");
    let password = bridge_password(kafka);
    assert!(!bridge.log_text().contains(&password));
    assert!(!bridge.metrics().await.contains(&password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_secret_with_the_documented_properties_and_the_ca_publishes() {
    let kafka = cluster();
    let (topic, dlq) = topics_on(kafka, "chart");
    let ca = std::fs::read_to_string(kafka.env("KAFKA_CA")).unwrap();
    // The documented ssl.ca.location is where the chart mounts kafka-ca.pem.
    let properties = documented_properties(
        kafka.env("KAFKA_BRIDGE_USER"),
        &bridge_password(kafka),
        None,
    );
    let values = json!({
        "config": {"kafkaBrokers": kafka.bootstrap(), "kafkaTopic": topic, "kafkaDlqTopic": dlq},
        "secrets": {
            "encryptKey": ENCRYPT_KEY,
            "verificationToken": TOKEN,
            "kafkaProperties": properties,
            "kafkaCa": ca,
        },
    });
    let pod = pod::render(&[&values.to_string()]);
    let files = pod["files"].as_object().unwrap();
    let mount = pod::mount_path(&pod);
    assert!(
        files.contains_key(&format!("{mount}/kafka-ca.pem")),
        "the chart puts the CA in the Secret: {pod}"
    );
    assert!(
        properties.contains(&format!("ssl.ca.location={mount}/kafka-ca.pem")),
        "docs/kafka.md names the chart's mount path: {properties}"
    );
    let root = pod::TempDir::new("chart-sasl");
    let bridge = pod::spawn(&pod, &root, &kafka.bootstrap());
    bridge.wait_ready(Duration::from_secs(60));
    let path = pod["env"]["BRIDGE_EVENT_PATH"].as_str().unwrap();
    let (body, headers) = Feishu::new().sign(&withdrawal("ak-chart-1", "oc_ak_chart"));
    let r = signed_post(&reqwest::Client::new(), &bridge.url(path), body, &headers)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let records = read_back(kafka, &topic, 1);
    assert_eq!(records.len(), 1, "{records:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_password_is_not_ready_and_says_so_without_the_password() {
    let kafka = cluster();
    let (topic, _) = topics_on(kafka, "wrong-password");
    let wrong = "not-the-password-4711";
    let properties =
        joined(&kafka.sasl_ssl(kafka.env("KAFKA_BRIDGE_USER"), wrong, kafka.env("KAFKA_CA")));
    let bridge = Bridge::spawn(
        &kafka.bootstrap(),
        &topic,
        &[("KAFKA_PROPERTIES", &properties)],
    );
    let body = wait_not_ready_saying(
        &bridge,
        &["refused authentication", "SCRAM-SHA-512", "user \"bridge\""],
    )
    .await;
    assert!(!body.contains(wrong), "{body}");
    // Callbacks meanwhile: Feishu is told to retry.
    let r = Feishu::new()
        .push(&bridge, &withdrawal("ak-wrongpw-1", "oc_ak_wrongpw"))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let logs = bridge.log_text();
    assert!(logs.contains("kafka refuses the bridge's client"), "{logs}");
    assert!(!logs.contains(wrong));
    assert!(!bridge.metrics().await.contains(wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_brokers_is_a_clear_tls_error() {
    let kafka = cluster();
    let (topic, _) = topics_on(kafka, "wrong-ca");
    let properties = joined(&kafka.sasl_ssl(
        kafka.env("KAFKA_BRIDGE_USER"),
        &bridge_password(kafka),
        kafka.env("KAFKA_OTHER_CA"),
    ));
    let bridge = Bridge::spawn(
        &kafka.bootstrap(),
        &topic,
        &[("KAFKA_PROPERTIES", &properties)],
    );
    wait_not_ready_saying(
        &bridge,
        &[
            "TLS handshake with kafka failed",
            "certificate verify failed",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_topic_is_named_callbacks_retry_and_publish_once_the_acl_is_added() {
    let kafka = cluster();
    // A member topic outside the bridge's granted prefix; its dead-letter
    // topic inside it.
    let denied = format!("denied.members.{}", std::process::id());
    let (_, dlq) = topics_on(kafka, "denied");
    kafka.create_topics(&[&denied]);
    let dir = pod::TempDir::new("denied");
    let file = properties_file(kafka, &dir);
    let bridge = Bridge::spawn(
        &kafka.bootstrap(),
        &denied,
        &[
            ("KAFKA_PROPERTIES_FILE", file.to_str().unwrap()),
            ("KAFKA_DLQ_TOPIC", &dlq),
        ],
    );
    wait_not_ready_saying(
        &bridge,
        &[
            &format!("denies Describe on the member topic \"{denied}\""),
            "user \"bridge\"",
        ],
    )
    .await;
    let feishu = Feishu::new();
    let event = withdrawal("ak-denied-1", "oc_ak_denied");
    let denials = || async {
        metric(
            &bridge.metrics().await,
            "feishu_bridge_kafka_delivery_errors_total{kind=\"denied\"}",
        )
    };
    // Feishu retries until an answer is 200; each answer here is a
    // retryable 503 that counts a denial.
    let retry_until = |want_denials: f64| {
        let (feishu, event, bridge) = (&feishu, &event, &bridge);
        async move {
            let give_up = Instant::now() + Duration::from_secs(40);
            loop {
                let r = feishu.push(bridge, event).await;
                if r.status == 200 {
                    return r.status;
                }
                assert_eq!(r.status, 503, "{}", r.body);
                assert!(r.retry_after.is_some());
                if want_denials > 0.0
                    && metric(
                        &bridge.metrics().await,
                        "feishu_bridge_kafka_delivery_errors_total{kind=\"denied\"}",
                    ) >= want_denials
                {
                    return r.status;
                }
                assert!(
                    Instant::now() < give_up,
                    "still {}: {}; logs: {}",
                    r.status,
                    r.body,
                    bridge.log_text()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // No ACL at all: the dedup warm start cannot read the topic either and
    // waits for it; callbacks are told to retry.
    let r = feishu.push(&bridge, &event).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.retry_after.is_some());
    assert!(webhook_outcome(&bridge.metrics().await, "publish_failed") >= 1.0);

    // Describe and Read granted, Write forgotten: each write is denied,
    // counted, answered 503, and readiness names Write.
    kafka.allow("bridge", "Read,Describe", &denied);
    let before = denials().await;
    assert_eq!(retry_until(before + 1.0).await, 503);
    wait_not_ready_saying(
        &bridge,
        &[&format!("denies Write on the member topic \"{denied}\"")],
    )
    .await;

    // The operator adds the ACL; Feishu's retries then publish.
    kafka.allow("bridge", "Write", &denied);
    assert_eq!(retry_until(0.0).await, 200);
    bridge.wait_ready(Duration::from_secs(30));
    let records = read_topic(&kafka.admin_bootstrap(), &denied, 1, SETTLE);
    assert_eq!(records.len(), 1, "published once: {records:?}");
}

fn counts(records: &[Record]) -> HashMap<String, usize> {
    let mut by_id = HashMap::new();
    for r in records {
        *by_id.entry(r.headers["event_id"].clone()).or_insert(0) += 1;
    }
    by_id
}

async fn push_all(feishu: &Feishu, bridge: &Bridge, envs: &[Value]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for chunk in envs.chunks(8) {
        let replies =
            futures_util::future::join_all(chunk.iter().map(|e| feishu.push(bridge, e))).await;
        statuses.extend(replies.iter().map(|r| r.status));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_redeliveries_and_a_kill_9_restart_publish_nothing_twice() {
    let kafka = cluster();
    let dir = pod::TempDir::new("replicas");
    let (topic, _) = topics_on(kafka, "replicas");
    let a = start_bridge(kafka, &dir, &topic, &[]);
    let b = start_bridge(kafka, &dir, &topic, &[]);
    let feishu = Feishu::new();
    let envs: Vec<Value> = (0..60)
        .map(|i| withdrawal(&format!("ak-rep-{i}"), &format!("oc_ak_rep_{}", i % 12)))
        .collect();
    assert!(push_all(&feishu, &a, &envs).await.iter().all(|s| *s == 200));
    // Feishu's re-deliveries, landing on the other replica once its
    // follower has read them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(push_all(&feishu, &b, &envs).await.iter().all(|s| *s == 200));
    assert_eq!(webhook_outcome(&b.metrics().await, "duplicate"), 60.0);

    // Replica A killed; a new one reads the memory back from the topics.
    drop(a);
    let a2 = start_bridge(kafka, &dir, &topic, &[]);
    assert!(push_all(&feishu, &a2, &envs)
        .await
        .iter()
        .all(|s| *s == 200));
    assert_eq!(webhook_outcome(&a2.metrics().await, "duplicate"), 60.0);

    let records = read_back(kafka, &topic, 60);
    let by_id = counts(&records);
    assert_eq!(by_id.len(), 60, "{by_id:?}");
    assert!(by_id.values().all(|n| *n == 1), "{by_id:?}");
}

fn rebuild(records: &[Record]) -> chat_members::Membership {
    let mut ordered: Vec<&Record> = records.iter().collect();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    let mut m = chat_members::Membership::default();
    for r in ordered {
        m.apply(&r.value).expect("a member record or a snapshot");
    }
    m
}

fn members_of(m: &chat_members::Membership) -> BTreeMap<String, BTreeSet<String>> {
    m.chats
        .iter()
        .map(|(id, c)| (id.clone(), c.members.clone()))
        .collect()
}

fn bot_added(event_id: &str, chat: &str) -> Value {
    let mut v = withdrawal(event_id, chat);
    v["header"]["event_type"] = "im.chat.member.bot.added_v1".into();
    v["header"]["create_time"] = feishu_kafka_bridge::pipeline::now_ms().to_string().into();
    v["event"].as_object_mut().unwrap().remove("users");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_on_a_bot_join_and_from_the_snapshot_command_rebuild_the_truth() {
    let kafka = cluster();
    let dir = pod::TempDir::new("snapshots");
    let (topic, _) = topics_on(kafka, "snapshots");
    let stand_in = OpenApiStandIn::start();
    stand_in.add_chat("oc_ak_snap_bot", 1200);
    stand_in.add_chat("oc_ak_snap_two", 40);
    let app = [
        ("FEISHU_APP_ID", APP_ID),
        ("FEISHU_APP_SECRET", APP_SECRET),
        ("FEISHU_DOMAIN", stand_in.url.as_str()),
    ];
    let bridge = start_bridge(kafka, &dir, &topic, &app);
    // A first event, retried as Feishu would, so that the producer has its
    // idempotence id before the bot's arrival: a bot.added acknowledged
    // after the publish deadline gets no snapshot of its own
    // (docs/records.md, Snapshots).
    let feishu = Feishu::new();
    let give_up = Instant::now() + Duration::from_secs(30);
    while feishu
        .push(&bridge, &withdrawal("ak-snap-first", "oc_ak_snap_first"))
        .await
        .status
        != 200
    {
        assert!(Instant::now() < give_up, "no 200 within 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = feishu
        .push(&bridge, &bot_added("ak-snap-bot", "oc_ak_snap_bot"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The first event, bot.added, then the snapshot's two parts (1,000
    // members a part), the last three in the bot's chat's line.
    let read = read_back(kafka, &topic, 4);
    let mut ordered: Vec<Record> = read
        .iter()
        .filter(|r| r.key.as_deref() == Some("oc_ak_snap_bot"))
        .cloned()
        .collect();
    ordered.sort_by_key(|r| r.offset);
    assert_eq!(ordered.len(), 3, "{read:?}");
    assert_eq!(ordered[0].value["schema"], "feishu.chat_bot_added.v1");
    assert_eq!(ordered[1].value["trigger"], "bot_added");
    drop(bridge);

    // The snapshot command, with the same documented properties.
    let file = properties_file(kafka, &dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"));
    cmd.env_clear()
        .arg("snapshot")
        .env("KAFKA_BROKERS", kafka.bootstrap())
        .env("KAFKA_TOPIC", &topic)
        .env("KAFKA_PROPERTIES_FILE", &file)
        .env("BRIDGE_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in app {
        cmd.env(k, v);
    }
    let out = child::spawn(cmd).unwrap().wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Two chats: 2 + 1 parts more. The first event's chat is not one the
    // stand-in knows; the rest is the truth.
    let read = read_back(kafka, &topic, 7);
    assert_eq!(read.len(), 7, "{read:?}");
    let mut rebuilt = members_of(&rebuild(&read));
    rebuilt.remove("oc_ak_snap_first");
    assert_eq!(rebuilt, stand_in.truth());
}
