//! `feishu-kafka-bridge demo`: the whole path on one machine, with no
//! Kafka to install. Starts librdkafka's mock cluster (a Kafka-protocol
//! broker inside this process, reachable over TCP), runs the bridge against
//! it with every member event type routed, plays Feishu for a short member
//! sequence built from the seed's sample event (users added, then the
//! invitation withdrawn), and prints what a consumer reads back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{Config, DemoArgs, Secret};
use crate::protocol::EncryptKey;
use crate::record::MemberKind;

const SAMPLE: &str = include_str!("../tests/fixtures/seed_sample.json");
const DEMO_ENCRYPT_KEY: &str = "demo-encrypt-key";
/// The seed sample's own token, so the sample passes the token check as is.
const DEMO_TOKEN: &str = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV";
const PARTITIONS: i32 = 3;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka mock cluster")?;
    let brokers = cluster.bootstrap_servers();

    // The documented defaults (topics, routing: every member type), so that
    // what the demo shows is what a deploy with no settings does.
    let config = Config {
        listen: args.listen,
        admin_listen: args.admin_listen,
        encrypt_key: Some(Secret::new(DEMO_ENCRYPT_KEY)),
        verification_token: Some(Secret::new(DEMO_TOKEN)),
        // Off so that the curl command printed below keeps working.
        timestamp_window: None,
        readiness_interval: Duration::from_millis(500),
        ..Config::with_defaults(&brokers)
    };
    cluster.create_topic(&config.topic, PARTITIONS, 1)?;
    cluster.create_topic(&config.dlq_topic, PARTITIONS, 1)?;
    let topic = config.topic.clone();
    let config_topic = topic.clone();
    let listeners = crate::server::Listeners::bind(&config)
        .await
        .context("pick other addresses with --demo-listen and --demo-admin-listen")?;
    let (Some(addr), Some(admin)) = (listeners.callback_addr(), listeners.admin_addr()) else {
        bail!("the demo's listeners have no local address");
    };
    let url = format!("http://{addr}/webhook/event");
    let server = tokio::spawn(crate::run(config, listeners, crate::shutdown_signal()));

    println!();
    println!("embedded Kafka (librdkafka mock cluster) bootstrap: {brokers}");
    println!("bridge callback URL:                                {url}");
    println!("encrypt key: {DEMO_ENCRYPT_KEY}   verification token: {DEMO_TOKEN}");
    wait_ready(admin).await?;

    let key = EncryptKey::new(DEMO_ENCRYPT_KEY);
    let client = reqwest::Client::new();
    // The users of the sample are added, then their invitation withdrawn:
    // two records of one chat, in that order.
    let added = SAMPLE
        .replace("5e3702a84e847582be8db7fb73283c02", "demo-added-event-0001")
        .replace(
            MemberKind::UserWithdrawn.event_type(),
            MemberKind::UserAdded.event_type(),
        );
    for (what, envelope, nonce) in [
        ("users added", added.as_str(), "0"),
        ("invitation withdrawn (the seed's sample)", SAMPLE, "1"),
    ] {
        let (body, ts, nonce, sig) = signed_body(&key, envelope, nonce);
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-lark-request-timestamp", &ts)
            .header("x-lark-request-nonce", &nonce)
            .header("x-lark-signature", &sig)
            .body(body)
            .send()
            .await
            .context("pushing a sample event")?;
        println!(
            "\npushed an event, {what} (signed and encrypted): HTTP {} {}",
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default()
        );
    }

    let records = tokio::task::spawn_blocking(move || read(&brokers, &topic, 2)).await??;
    println!(
        "\na consumer read back from {}, in the chat's order:\n{}",
        config_topic,
        records.join("\n\n")
    );

    // A second event, ready for curl: pushing it twice shows deduplication.
    let second = SAMPLE.replace("5e3702a84e847582be8db7fb73283c02", "demo-second-event-0001");
    let (body, ts, nonce, sig) = signed_body(&key, &second, "2");
    let file = std::env::temp_dir().join("feishu-kafka-bridge-demo-event.json");
    std::fs::write(&file, &body).with_context(|| format!("writing {}", file.display()))?;
    println!("\npush another event (run it twice: the second answer is a duplicate, not a second record;");
    println!("the demo's bridge accepts any signed timestamp, so this works for as long as the demo runs):");
    println!(
        "  curl -sS -X POST {url} -H 'Content-Type: application/json' \\\n    -H 'X-Lark-Request-Timestamp: {ts}' -H 'X-Lark-Request-Nonce: {nonce}' \\\n    -H 'X-Lark-Signature: {sig}' --data-binary @{}",
        file.display()
    );
    println!(
        "read the topic (kcat: apt-get install kcat):\n  kcat -b {} -t {} -C -o beginning -f 'key=%k headers=%h\\n%s\\n'",
        cluster.bootstrap_servers(),
        config_topic
    );
    println!("metrics: curl -s http://{admin}/metrics | grep ^feishu_bridge_");
    println!("\nserving until Ctrl-C\n");

    let result = server.await.context("bridge task")?;
    drop(cluster);
    result
}

/// Encrypts and signs an envelope the way Feishu does.
fn signed_body(key: &EncryptKey, envelope: &str, nonce: &str) -> (String, String, String, String) {
    let iv: [u8; 16] = rand::random();
    let body = serde_json::json!({ "encrypt": key.encrypt(envelope.as_bytes(), iv) }).to_string();
    let ts = crate::clock::now_ms().div_euclid(1000).to_string();
    let nonce = format!("demo-nonce-{nonce}");
    let sig = key.sign(&ts, &nonce, body.as_bytes());
    (body, ts, nonce, sig)
}

async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let url = format!("http://{addr}/readyz");
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the bridge did not become ready within 10 s")
}

/// The first `n` records of the topic, formatted.
fn read(brokers: &str, topic: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "feishu-kafka-bridge-demo")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    let mut records = Vec::new();
    while std::time::Instant::now() < give_up && records.len() < n {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let mut out = format!(
            "  partition {} offset {}\n  key: {}\n  headers:",
            msg.partition(),
            msg.offset(),
            String::from_utf8_lossy(msg.key().unwrap_or_default())
        );
        if let Some(h) = msg.headers() {
            for hdr in h.iter() {
                out.push_str(&format!(
                    " {}={}",
                    hdr.key,
                    String::from_utf8_lossy(hdr.value.unwrap_or_default())
                ));
            }
        }
        let value: serde_json::Value = serde_json::from_slice(msg.payload().unwrap_or_default())?;
        out.push_str("\n  value:\n");
        out.push_str(&serde_json::to_string_pretty(&value)?);
        records.push(out);
    }
    if records.len() < n {
        bail!(
            "{} of {n} records arrived on {topic} within 15 s",
            records.len()
        );
    }
    Ok(records)
}
