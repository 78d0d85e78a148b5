//! The dedup memory shared through Kafka (`src/follower/`), with the real
//! binary as several replicas on one real broker (tansu): re-deliveries that
//! land on another replica, restarts, the TTL and capacity bounds of the
//! warm start, and the switch that turns it all off.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::stand_in::{Pusher, Schedule};
use common::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_millis(1500);

fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| withdrawal(&format!("{prefix}-{i}"), &format!("oc_{prefix}_{}", i % 12)))
        .collect()
}

/// An authentic withdrawal that cannot be normalized: a dead letter.
fn dead_letter(id: &str) -> Value {
    let mut env = withdrawal(id, "x");
    env["event"].as_object_mut().unwrap().remove("chat_id");
    env
}

fn counts(records: &[Record]) -> HashMap<String, usize> {
    let mut by_id = HashMap::new();
    for r in records {
        *by_id.entry(r.headers["event_id"].clone()).or_insert(0) += 1;
    }
    by_id
}

async fn push_all(feishu: &Feishu, bridge: &Bridge, envs: &[Value], concurrency: usize) {
    let chunks: Vec<Vec<Value>> = envs.chunks(concurrency).map(|c| c.to_vec()).collect();
    for chunk in chunks {
        let replies =
            futures_util::future::join_all(chunk.iter().map(|e| feishu.push(bridge, e))).await;
        for (env, r) in chunk.iter().zip(replies) {
            assert_eq!(
                r.status, 200,
                "{}: {} ({})",
                env["header"]["event_id"], r.body, bridge.addr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_to_another_replica_is_a_duplicate_for_records_and_dead_letters() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "replicas");
    let a = Bridge::start(&broker.bootstrap, &topic, &[]);
    let b = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();

    let records = events("rep", 60);
    let dead: Vec<Value> = (0..10)
        .map(|i| dead_letter(&format!("rep-dl-{i}")))
        .collect();
    let all: Vec<Value> = records.iter().chain(&dead).cloned().collect();
    push_all(&feishu, &a, &all, 8).await;

    // Feishu's first retry comes 15 s later; a few seconds is plenty.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Half the re-deliveries one by one, half all at once.
    let (one_by_one, at_once) = all.split_at(all.len() / 2);
    push_all(&feishu, &b, one_by_one, 1).await;
    push_all(&feishu, &b, at_once, at_once.len()).await;

    let on_topic = read_topic(&broker.bootstrap, &topic, records.len(), SETTLE);
    let on_dlq = read_topic(&broker.bootstrap, &dlq, dead.len(), SETTLE);
    let (c, d) = (counts(&on_topic), counts(&on_dlq));
    let twice: Vec<_> = c.iter().chain(&d).filter(|(_, n)| **n > 1).collect();
    println!(
        "re-delivered to another replica: {} records, {} dead letters, {} published twice",
        on_topic.len(),
        on_dlq.len(),
        twice.len()
    );
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert_eq!(c.len(), records.len());
    assert_eq!(d.len(), dead.len());

    let m = b.metrics().await;
    assert_eq!(webhook_outcome(&m, "duplicate"), all.len() as f64);
    assert_eq!(webhook_outcome(&m, "published"), 0.0);
    assert!(ids_learned(&m, "followed") >= all.len() as f64);
    // And the other way round: A learned nothing it did not publish itself,
    // but it follows too.
    let m = a.metrics().await;
    assert_eq!(metric(&m, "feishu_bridge_dedup_follower_enabled"), 1.0);
    assert!(metric(&m, "feishu_bridge_dedup_follower_delay_seconds_count") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_loses_and_duplicates_nothing() {
    let broker = Broker::shared();
    for round in 0..3 {
        let (topic, _) = topics(broker, "kill9-shared");
        let listen = format!("127.0.0.1:{}", free_port());
        let env = [("BRIDGE_LISTEN", listen.as_str())];
        let first = Bridge::start(&broker.bootstrap, &topic, &env);
        let pusher = Pusher::new(first.url("/webhook/event"), Schedule::compressed());
        let run = pusher.spawn_run(
            events(&format!("k{round}"), 300),
            16,
            Duration::from_millis(5),
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(first); // SIGKILL
        let second = Bridge::start(&broker.bootstrap, &topic, &env);
        run.await.unwrap();

        let v = pusher.ledger.verdict(&broker.bootstrap, &topic);
        println!(
            "kill -9 under load, restart, round {round}: {}",
            v.summary()
        );
        v.assert_exactly_once();
        assert!(v.unacked.is_empty(), "gave up on {:?}", v.unacked);
        let m = second.metrics().await;
        assert!(
            ids_learned(&m, "warm_start") >= 1.0,
            "the restarted replica read nothing back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_start_forgets_ids_past_the_ttl() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "ttl");
    let ttl = [("BRIDGE_DEDUP_TTL_SECS", "6")];
    let a = Bridge::start(&broker.bootstrap, &topic, &ttl);
    let feishu = Feishu::new();
    let old = withdrawal("ttl-old", "oc_ttl");
    let young = withdrawal("ttl-young", "oc_ttl");
    assert_eq!(feishu.push(&a, &old).await.status, 200);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(feishu.push(&a, &young).await.status, 200);
    drop(a);

    let b = Bridge::start(&broker.bootstrap, &topic, &ttl);
    let m = b.metrics().await;
    assert_eq!(
        ids_learned(&m, "warm_start"),
        1.0,
        "only the young id is within the TTL"
    );
    assert_eq!(feishu.push(&b, &young).await.status, 200);
    assert_eq!(feishu.push(&b, &old).await.status, 200);
    let m = b.metrics().await;
    assert_eq!(webhook_outcome(&m, "duplicate"), 1.0);
    assert_eq!(webhook_outcome(&m, "published"), 1.0);
    let c = counts(&read_topic(&broker.bootstrap, &topic, 3, SETTLE));
    assert_eq!((c["ttl-old"], c["ttl-young"]), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_start_keeps_the_newest_ids_within_the_capacity() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "capacity");
    let a = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();
    let all = events("cap", 90);
    // One at a time, so that push order is timestamp order.
    push_all(&feishu, &a, &all, 1).await;
    drop(a);

    let b = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[("BRIDGE_DEDUP_CAPACITY", "30")],
    );
    let m = b.metrics().await;
    let remembered = metric(&m, "feishu_bridge_dedup_entries");
    let learned = ids_learned(&m, "warm_start");
    println!("capacity 30, 90 records: warm start learned {learned}, remembers {remembered}");
    assert!(remembered <= 30.0, "remembers {remembered}");
    assert!(
        learned <= 30.0,
        "read {learned} records for a capacity of 30"
    );
    // The newest ids are the ones remembered...
    push_all(&feishu, &b, &all[75..], 5).await;
    let m = b.metrics().await;
    assert_eq!(webhook_outcome(&m, "duplicate"), 15.0);
    // ...and the oldest are not.
    push_all(&feishu, &b, &all[..5], 5).await;
    let m = b.metrics().await;
    assert_eq!(webhook_outcome(&m, "published"), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_follower_off_each_replica_remembers_only_its_own() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "follow-off");
    let off = [("BRIDGE_DEDUP_FOLLOW", "false")];
    let a = Bridge::start(&broker.bootstrap, &topic, &off);
    let b = Bridge::start(&broker.bootstrap, &topic, &off);
    let feishu = Feishu::new();
    let env = withdrawal("off-1", "oc_off");
    assert_eq!(feishu.push(&a, &env).await.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(feishu.push(&b, &env).await.status, 200);
    assert_eq!(feishu.push(&a, &env).await.status, 200);
    let c = counts(&read_topic(&broker.bootstrap, &topic, 2, SETTLE));
    assert_eq!(c["off-1"], 2, "today's per-process behaviour");
    let m = b.metrics().await;
    assert_eq!(metric(&m, "feishu_bridge_dedup_follower_enabled"), 0.0);
    assert!(b.log_text().contains("dedup follower off"));
}

/// The scenarios of the issue that asked for this, as a user would try them:
/// 200 events acknowledged by one replica, then a quarter re-delivered,
/// (1) to another replica 3 s later, (2) to the same one after `kill -9`
/// and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_redelivered_to_another_replica_or_after_kill_9_publishes_nothing_twice() {
    let broker = Broker::shared();
    let feishu = Feishu::new();
    for scenario in ["another replica", "kill -9 and restart"] {
        let (topic, _) = topics(broker, "quarter");
        let listen = format!("127.0.0.1:{}", free_port());
        let env = [("BRIDGE_LISTEN", listen.as_str())];
        let a = Bridge::start(&broker.bootstrap, &topic, &env);
        // Both replicas run from the start: B learns A's ids by following.
        let b =
            (scenario == "another replica").then(|| Bridge::start(&broker.bootstrap, &topic, &[]));
        let all = events("q", 200);
        push_all(&feishu, &a, &all, 16).await;
        let target = if let Some(b) = b {
            tokio::time::sleep(Duration::from_secs(3)).await;
            b
        } else {
            drop(a); // SIGKILL
            Bridge::start(&broker.bootstrap, &topic, &env)
        };
        let quarter: Vec<Value> = all.iter().step_by(4).cloned().collect();
        push_all(&feishu, &target, &quarter, 8).await;
        let c = counts(&read_topic(&broker.bootstrap, &topic, all.len(), SETTLE));
        let twice = c.values().filter(|n| **n > 1).count();
        println!(
            "{scenario}: 200 acknowledged, {} re-delivered, {twice} published twice",
            quarter.len()
        );
        assert_eq!(c.len(), all.len());
        assert_eq!(twice, 0, "{scenario}");
    }
}

/// An upgrade: records the previous version wrote have no `app_id` header,
/// only `ce_source`. The new replica still knows their ids within their
/// app, so a retry of one is a duplicate; the same id from another app is
/// another event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_the_previous_version_published_stay_remembered_within_their_app() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "upgrade");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    // As 0.2.0 wrote them: event_id, event_type, tenant_key, schema, ce_*.
    for i in 0..3 {
        let id = format!("upgrade-{i}");
        let headers = [
            ("event_id", id.as_str()),
            ("event_type", "im.chat.member.user.withdrawn_v1"),
            ("tenant_key", "2ca1d211f64f6438"),
            ("schema", "feishu.chat_member_withdrawn.v1"),
            ("ce_specversion", "1.0"),
            ("ce_id", id.as_str()),
            ("ce_source", "/feishu/apps/cli_9f5343c580712544"),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("oc_upgrade")
                    .payload("{}")
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();
    for i in 0..3 {
        let env = withdrawal(&format!("upgrade-{i}"), "oc_upgrade");
        assert_eq!(feishu.push(&bridge, &env).await.status, 200);
    }
    let mut other_app = withdrawal("upgrade-0", "oc_upgrade");
    other_app["header"]["app_id"] = "cli_another_app".into();
    assert_eq!(feishu.push(&bridge, &other_app).await.status, 200);
    let m = bridge.metrics().await;
    assert_eq!(webhook_outcome(&m, "duplicate"), 3.0, "{m}");
    assert_eq!(webhook_outcome(&m, "published"), 1.0, "{m}");
    let records = read_topic(&broker.bootstrap, &topic, 4, SETTLE);
    assert_eq!(records.len(), 4);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.headers.get("app_id").map(String::as_str) == Some("cli_another_app"))
            .count(),
        1
    );
}
