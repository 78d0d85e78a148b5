//! A downstream consumer of the member topic that keeps every chat's
//! membership, from the records alone.
//!
//!     cargo run --example membership
//!         starts the embedded broker (librdkafka's mock cluster) and the
//!         bridge with every member event type routed, plays Feishu for a
//!         few chats (users invited, an invitation withdrawn, the bot added,
//!         a user removed, another added, the bot removed), then rebuilds
//!         each chat's membership from the topic and checks it against what
//!         was sent.
//!
//!     cargo run --example membership -- --brokers HOST:PORT --topic TOPIC [--idle-secs N]
//!         reads a real member topic from the beginning, with its partitions
//!         assigned (no consumer group), and prints each chat's membership
//!         once the topic has been quiet for N seconds (default 5).
//!
//! The fold itself is `chat_members.rs`; the integration tests use it to
//! prove that the stream is enough to rebuild membership.

mod chat_members;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chat_members::{Apps, Chat};
use feishu_kafka_bridge::config::Config;
use feishu_kafka_bridge::record::MemberKind;
use feishu_kafka_bridge::routing::Routing;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const TOPIC: &str = "feishu.chat.members";
const SAMPLE: &str = include_str!("../../fixtures/seed_sample.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match (flag("--brokers"), flag("--topic")) {
        (Some(brokers), Some(topic)) => {
            let idle = flag("--idle-secs")
                .map_or(Ok(5), |s| s.parse())
                .context("--idle-secs")?;
            let (apps, records) = tokio::task::spawn_blocking(move || {
                rebuild(&brokers, &topic, Duration::from_secs(idle))
            })
            .await??;
            println!("\n{records} record(s)");
            for (app, view) in &apps.views {
                println!(
                    "\napp {}:",
                    if app.is_empty() { "(none named)" } else { app }
                );
                print_chats(&view.chats);
            }
            Ok(())
        }
        (None, None) => self_contained().await,
        _ => bail!("usage: membership [--brokers HOST:PORT --topic TOPIC [--idle-secs N]]"),
    }
}

/// Reads `topic` from the beginning of every partition until it has been
/// quiet for `idle`, applying each record.
fn rebuild(brokers: &str, topic: &str, idle: Duration) -> anyhow::Result<(Apps, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "membership-example")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .with_context(|| format!("topic {topic} has no partitions"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut apps = Apps::default();
    let mut records = 0;
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        last = Instant::now();
        let value: Value = serde_json::from_slice(msg.payload().unwrap_or_default())?;
        match apps.apply(&value) {
            Ok(()) => records += 1,
            Err(e) => eprintln!(
                "skipped offset {} of partition {}: {e}",
                msg.offset(),
                msg.partition()
            ),
        }
    }
    Ok((apps, records))
}

fn print_chats(chats: &BTreeMap<String, Chat>) {
    println!("{} chat(s):", chats.len());
    for (id, chat) in chats {
        let bot = match chat.bot {
            Some(true) => "in the chat",
            Some(false) => "removed",
            None => "unknown",
        };
        let members: Vec<&str> = chat.members.iter().map(String::as_str).collect();
        println!(
            "  {id} ({}): bot {bot}; members: {}",
            chat.name.as_deref().unwrap_or("?"),
            members.join(", ")
        );
    }
}

/// One chat's script: every member event type, in an order that only the
/// right order of records turns into the right membership.
fn script(chat: &str, last_bot_removed: bool) -> (Vec<Value>, Chat) {
    let user = |name: &str| format!("ou_{chat}_{name}");
    let mut steps = vec![
        (
            MemberKind::UserAdded,
            vec![user("alice"), user("bob"), user("carol")],
        ),
        (MemberKind::UserWithdrawn, vec![user("carol")]),
        (MemberKind::BotAdded, vec![]),
        (MemberKind::UserDeleted, vec![user("alice")]),
        (MemberKind::UserAdded, vec![user("dave")]),
    ];
    if last_bot_removed {
        steps.push((MemberKind::BotDeleted, vec![]));
    }
    let events = steps
        .into_iter()
        .enumerate()
        .map(|(i, (kind, users))| envelope(&format!("{chat}-{i}"), chat, kind, &users))
        .collect();
    let truth = Chat {
        members: [user("bob"), user("dave")].into(),
        bot: Some(!last_bot_removed),
        name: Some(format!("chat {chat}")),
    };
    (events, truth)
}

/// A Feishu envelope of `kind`, built on the documentation's sample.
fn envelope(event_id: &str, chat: &str, kind: MemberKind, users: &[String]) -> Value {
    let mut v: Value = serde_json::from_str(SAMPLE).expect("the sample is JSON");
    v["header"]["event_id"] = event_id.into();
    v["header"]["event_type"] = kind.event_type().into();
    v["event"]["chat_id"] = chat.into();
    v["event"]["name"] = format!("chat {chat}").into();
    let event = v["event"].as_object_mut().expect("the sample has an event");
    if kind.has_users() {
        let users: Vec<Value> = users
            .iter()
            .map(|id| json!({"name": id, "tenant_key": "2ca1d211f64f6438", "user_id": {"open_id": id}}))
            .collect();
        event.insert("users".into(), users.into());
    } else {
        event.remove("users");
    }
    v
}

async fn self_contained() -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    cluster.create_topic(TOPIC, 3, 1)?;
    cluster.create_topic(&format!("{TOPIC}.dlq"), 3, 1)?;
    let brokers = cluster.bootstrap_servers();
    // Plaintext callbacks (no encrypt key or token) keep the example short;
    // the demo shows a signed and encrypted one.
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        topic: TOPIC.into(),
        dlq_topic: format!("{TOPIC}.dlq"),
        routing: Routing::new(MemberKind::ALL.into(), None),
        readiness_interval: Duration::from_millis(200),
        ..Config::with_defaults(&brokers)
    };
    let listeners = feishu_kafka_bridge::server::Listeners::bind(&config).await?;
    let url = format!(
        "http://{}/webhook/event",
        listeners.callback_addr().context("callback address")?
    );
    let ready = format!(
        "http://{}/readyz",
        listeners.admin_addr().context("admin address")?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let bridge = tokio::spawn(feishu_kafka_bridge::run(config, listeners, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while !http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > give_up {
            bail!("the bridge did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let chats = ["oc_example_1", "oc_example_2", "oc_example_3"];
    let mut truth = BTreeMap::new();
    let mut sent = 0;
    for (i, chat) in chats.iter().enumerate() {
        let (events, expected) = script(chat, i == 2);
        for event in &events {
            // One at a time: Feishu's order is the order it delivers in.
            let status = http.post(&url).json(event).send().await?.status();
            if !status.is_success() {
                bail!("the bridge answered {status}");
            }
            sent += 1;
        }
        truth.insert(chat.to_string(), expected);
    }
    println!("pushed {sent} member events for {} chats", chats.len());

    let (apps, records) =
        tokio::task::spawn_blocking(move || rebuild(&brokers, TOPIC, Duration::from_secs(2)))
            .await??;
    // One app played Feishu here, so the stream holds one app's view.
    let names: Vec<&String> = apps.views.keys().collect();
    if names.len() != 1 {
        bail!("records of {} apps, expected one: {names:?}", names.len());
    }
    let membership = apps.views.into_values().next().unwrap_or_default();
    println!(
        "\n{records} record(s) of app {}",
        membership.app_id.as_deref().unwrap_or("(none named)")
    );
    print_chats(&membership.chats);
    let _ = stop.send(());
    bridge.await??;
    drop(cluster);
    if membership.chats != truth {
        bail!("the membership rebuilt from the topic differs from the events sent: {truth:?}");
    }
    println!(
        "\na consumer rebuilt {} chat(s) from {records} record(s): membership matches the events sent",
        truth.len()
    );
    Ok(())
}
