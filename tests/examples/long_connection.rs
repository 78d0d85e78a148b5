//! Try the long-connection ingress on one machine:
//!
//!     cargo run --example long_connection
//!
//! Starts the embedded Kafka-protocol broker (librdkafka's mock cluster), a
//! Feishu stand-in (tests/common/ws_stand_in.rs: endpoint discovery and the
//! WebSocket side of the protocol), and the bridge with
//! `BRIDGE_INGRESS=long-connection` pointed at the stand-in. Then it pushes
//! the seed's sample event over the WebSocket whole, and again split into
//! three fragments (as Feishu re-delivers an event), prints the acks the
//! bridge sent back, the one record a consumer reads from the topic, and the
//! long-connection metrics; then shuts the bridge down.

#[path = "../common/ws_stand_in.rs"]
mod ws_stand_in;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use feishu_kafka_bridge::config::{Config, IngressMode, LongConnectionConfig, Secret};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use ws_stand_in::{Options, StandIn, APP_ID, APP_SECRET};

const TOPIC: &str = "feishu.chat.members";
const SAMPLE: &str = include_str!("../fixtures/seed_sample.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info,feishu_kafka_bridge=info")
        .with_target(false)
        .init();

    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    cluster.create_topic(TOPIC, 3, 1)?;
    cluster.create_topic(&format!("{TOPIC}.dlq"), 3, 1)?;
    let brokers = cluster.bootstrap_servers();
    let stand_in = StandIn::start(Options {
        ping_interval: 5,
        ..Options::default()
    })
    .await;
    println!(
        "\nembedded Kafka: {brokers}   Feishu stand-in: {}\n",
        stand_in.base_url
    );

    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        ingress: IngressMode::LongConnection,
        long_connection: Some(LongConnectionConfig {
            app_id: APP_ID.into(),
            app_secret: Secret::new(APP_SECRET),
            domain: stand_in.base_url.clone(),
            pong_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }),
        topic: TOPIC.into(),
        dlq_topic: format!("{TOPIC}.dlq"),
        readiness_interval: Duration::from_millis(500),
        ..Config::with_defaults(&brokers)
    };
    let listeners = feishu_kafka_bridge::server::Listeners::bind(&config).await?;
    let admin = listeners
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("no admin address"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let bridge = tokio::spawn(feishu_kafka_bridge::run(config, listeners, async move {
        let _ = stopped.await;
    }));

    wait(Duration::from_secs(15), "the bridge to connect", || {
        stand_in.state().connections >= 1
    })
    .await?;
    let ids = stand_in.push(
        &[
            (SAMPLE.as_bytes().to_vec(), 1),
            (SAMPLE.as_bytes().to_vec(), 3),
        ],
        false,
    );
    wait(Duration::from_secs(15), "both acks", || {
        stand_in.acked_ok(&ids)
    })
    .await?;

    println!("\nacks the bridge sent back over the WebSocket:");
    for a in &stand_in.state().acks {
        println!(
            "  message {}: {{\"code\":{}}}, biz_rt {} ms",
            a.message_id,
            a.code,
            a.biz_rt.as_deref().unwrap_or("-")
        );
    }

    let records = tokio::task::spawn_blocking(move || read_all(&brokers)).await??;
    println!(
        "\na consumer read {} record(s) from {TOPIC} (the second push was a duplicate):",
        records.len()
    );
    for (key, value) in &records {
        println!("  key {key}\n  {value}");
    }

    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    println!("\nlong-connection metrics:");
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.contains("long_connection_connected")
                || l.contains("long_connection_frames_total")
                || l.contains("ingress=\"long_connection\",outcome=\"published\"")
                || l.contains("ingress=\"long_connection\",outcome=\"duplicate\""))
    }) {
        println!("  {line}");
    }

    let _ = stop.send(());
    bridge.await??;
    println!(
        "\nbridge stopped (socket closed with a close frame: {})",
        stand_in.state().close_frames == 1
    );
    Ok(())
}

async fn wait(within: Duration, what: &str, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let give_up = Instant::now() + within;
    while !cond() {
        if Instant::now() > give_up {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every record of the topic: (key, value).
fn read_all(brokers: &str) -> anyhow::Result<Vec<(String, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "long-connection-example")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet_until {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg?;
            let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
            out.push((key, value));
        }
    }
    Ok(out)
}
