//! Apache Kafka losing brokers under steady load, after Kafka's own
//! replication system test: three brokers, replication factor 3,
//! min.insync.replicas 2, idempotence on; two bridge replicas with their
//! dedup followers over SASL_SSL; member events and raw events from many
//! chats, each chat's events one after another (Feishu's order), every
//! retry sent to the other replica, and a share of acknowledged events
//! delivered again to the other replica 15 s later (as Feishu re-delivers).
//! Three faults in turn:
//!   1. the leader of the member topic's partitions SIGKILLed, restarted later;
//!   2. a clean rolling restart of all three brokers, one at a time;
//!   3. two brokers stopped for 60 s: the ISR below min.insync.replicas.
//!
//! Then every acknowledged event must be on its topic exactly once, each
//! chat's member records in the order they were sent, and a re-delivery of
//! every acknowledged event to either replica a duplicate. The figures are
//! printed for docs/guarantees.md.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka::{Kafka, Mode};
use common::*;
use serde_json::Value;

const RAW_TYPE: &str = "im.message.receive_v1";
const MEMBER_TYPES: [&str; 5] = [
    "im.chat.member.user.added_v1",
    "im.chat.member.user.deleted_v1",
    "im.chat.member.user.withdrawn_v1",
    "im.chat.member.bot.added_v1",
    "im.chat.member.bot.deleted_v1",
];
const CHATS: usize = 24;
/// Feishu's retries after a failed attempt: its first is 15 s; the later
/// ones (5 min, 1 h, 6 h) are compressed, but their sum still outlasts the
/// 60 s outage.
const RETRIES: [u64; 5] = [15, 20, 30, 30, 30];
/// Feishu gives up on an attempt after this long.
const FEISHU_TIMEOUT: Duration = Duration::from_secs(3);

fn event(id: &str, chat: &str, event_type: &str, seq: usize) -> Value {
    let mut v = withdrawal(id, chat);
    v["header"]["event_type"] = event_type.into();
    v["header"]["create_time"] = (1_700_000_000_000i64 + seq as i64).to_string().into();
    if event_type == RAW_TYPE {
        v["event"] = serde_json::json!({"message": {"chat_id": chat, "message_id": id}});
    } else if event_type.contains(".bot.") {
        v["event"].as_object_mut().unwrap().remove("users");
    }
    v
}

#[derive(Default)]
struct Ledger {
    /// Per event: attempts (status or 0 for no answer) and when it was acked.
    attempts: HashMap<String, Vec<(u16, Instant)>>,
    acked: HashMap<String, Instant>,
    first: HashMap<String, Instant>,
    /// Member events acknowledged, per chat, in the order they were sent.
    sent_order: BTreeMap<String, Vec<String>>,
    repeats: usize,
    repeat_statuses: Vec<u16>,
}

struct Load {
    urls: [String; 2],
    feishu: Feishu,
    client: reqwest::Client,
    ledger: Mutex<Ledger>,
    stop: AtomicBool,
}

impl Load {
    async fn attempt(&self, replica: usize, env: &Value) -> u16 {
        let (body, headers) = self.feishu.sign(env);
        let r = signed_post(&self.client, &self.urls[replica], body, &headers)
            .timeout(FEISHU_TIMEOUT)
            .send()
            .await;
        match r {
            Ok(resp) => resp.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Delivers one event as Feishu would: the first attempt to `replica`,
    /// each retry to the other one.
    async fn deliver(&self, env: &Value, mut replica: usize) -> bool {
        let id = env["header"]["event_id"].as_str().unwrap().to_owned();
        self.ledger
            .lock()
            .unwrap()
            .first
            .insert(id.clone(), Instant::now());
        for delay in std::iter::once(0).chain(RETRIES) {
            tokio::time::sleep(Duration::from_secs(delay)).await;
            let status = self.attempt(replica, env).await;
            let now = Instant::now();
            let mut l = self.ledger.lock().unwrap();
            l.attempts
                .entry(id.clone())
                .or_default()
                .push((status, now));
            if status == 200 {
                l.acked.insert(id, now);
                return true;
            }
            drop(l);
            replica = 1 - replica;
        }
        false
    }

    /// One chat's events, one after another, until told to stop.
    async fn chat(self: Arc<Self>, n: usize) {
        let chat = format!("oc_akf_{n}");
        let mut seq = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let kinds = MEMBER_TYPES.len() + 1;
            let event_type = MEMBER_TYPES.get(seq % kinds).copied().unwrap_or(RAW_TYPE);
            let id = format!("akf-{n}-{seq}");
            let env = event(&id, &chat, event_type, seq);
            if self.deliver(&env, (n + seq) % 2).await && event_type != RAW_TYPE {
                self.ledger
                    .lock()
                    .unwrap()
                    .sent_order
                    .entry(chat.clone())
                    .or_default()
                    .push(id.clone());
            }
            // Every seventh acknowledged event again, 15 s later, to the
            // other replica, as Feishu re-delivers an event it was not sure of.
            if seq % 7 == 3 {
                let me = self.clone();
                let replica = (n + seq + 1) % 2;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(15)).await;
                    let status = me.attempt(replica, &env).await;
                    let mut l = me.ledger.lock().unwrap();
                    l.repeats += 1;
                    l.repeat_statuses.push(status);
                });
            }
            seq += 1;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    }
}

/// Samples both replicas' `/readyz` every 250 ms: the bodies seen while not ready.
fn watch_readiness(
    admins: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for admin in &admins {
                if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await {
                    if r.status() == 503 {
                        if let Ok(body) = r.text().await {
                            seen.push(body);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        seen
    })
}

fn wait_isr_full(kafka: &Kafka, topics: &[&str], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let full = topics.iter().all(|t| {
            let parts = kafka.partitions(t);
            !parts.is_empty()
                && parts
                    .iter()
                    .all(|(_, leader, isr)| *leader >= 0 && isr.len() == 3)
        });
        if full {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the ISR did not fill within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

async fn wait_both_ready(bridges: &[&Bridge], within: Duration) -> Duration {
    let started = Instant::now();
    for b in bridges {
        loop {
            if reqwest::blocking_get(&b.admin_url("/readyz")).ok() == Some(200) {
                break;
            }
            assert!(
                started.elapsed() < within,
                "a replica not ready within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_rolling_restart_and_isr_below_minimum_lose_and_duplicate_nothing() {
    let kafka = tokio::task::spawn_blocking(|| Kafka::start(Mode::Cluster))
        .await
        .unwrap();
    let kafka = Arc::new(kafka);
    let prefix = kafka.env("KAFKA_TOPIC_PREFIX").to_owned();
    let topic = format!("{prefix}faults.{}", std::process::id());
    let dlq = format!("{topic}.dlq");
    let raw = format!("{topic}.raw");
    kafka.create_topics(&[&topic, &dlq, &raw]);
    let properties = kafka.bridge_properties();
    let env = [
        ("KAFKA_PROPERTIES", properties.as_str()),
        ("BRIDGE_RAW_EVENT_TYPES", RAW_TYPE),
        ("BRIDGE_RAW_TOPIC", raw.as_str()),
    ];
    let a = Bridge::start(&kafka.bootstrap(), &topic, &env);
    let b = Bridge::start(&kafka.bootstrap(), &topic, &env);
    let load = Arc::new(Load {
        urls: [a.url("/webhook/event"), b.url("/webhook/event")],
        feishu: Feishu::new(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        ledger: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    let chats: Vec<_> = (0..CHATS)
        .map(|n| tokio::spawn(load.clone().chat(n)))
        .collect();
    let stop_watching = Arc::new(AtomicBool::new(false));
    let readiness = watch_readiness(
        vec![a.admin.clone(), b.admin.clone()],
        stop_watching.clone(),
    );
    let mut figures: Vec<String> = Vec::new();
    let blocking = |f: Box<dyn FnOnce() + Send>| tokio::task::spawn_blocking(f);
    tokio::time::sleep(Duration::from_secs(10)).await;

    // 1. The leader of most of the member topic's partitions, SIGKILLed.
    let leader = {
        let mut by_leader: HashMap<i32, usize> = HashMap::new();
        for (_, l, _) in kafka.partitions(&topic) {
            *by_leader.entry(l).or_default() += 1;
        }
        by_leader.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    };
    let name = kafka.name_of(leader);
    let fault = Instant::now();
    let k = kafka.clone();
    let n = name.clone();
    blocking(Box::new(move || k.kill(&n))).await.unwrap();
    let moved = {
        let started = Instant::now();
        loop {
            let parts = kafka.partitions(&topic);
            if parts.iter().all(|(_, l, _)| *l >= 0 && *l != leader) {
                break started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no new leader");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::sleep(Duration::from_secs(15)).await;
    let k = kafka.clone();
    blocking(Box::new(move || k.restart(&name))).await.unwrap();
    let k = kafka.clone();
    let (t1, t2, t3) = (topic.clone(), dlq.clone(), raw.clone());
    let isr = tokio::task::spawn_blocking(move || {
        wait_isr_full(&k, &[&t1, &t2, &t3], Duration::from_secs(120))
    })
    .await
    .unwrap();
    figures.push(format!(
        "leader (broker {leader}) SIGKILLed: new leaders elected in {:.1} s; restarted after {:.0} s, ISR full again {:.1} s after its restart",
        moved.as_secs_f64(),
        fault.elapsed().as_secs_f64() - isr.as_secs_f64(),
        isr.as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 2. A clean rolling restart, one broker at a time.
    let rolling = Instant::now();
    for name in kafka.broker_names() {
        let k = kafka.clone();
        let (t1, t2, t3) = (topic.clone(), dlq.clone(), raw.clone());
        tokio::task::spawn_blocking(move || {
            k.stop(&name);
            k.restart(&name);
            wait_isr_full(&k, &[&t1, &t2, &t3], Duration::from_secs(120));
        })
        .await
        .unwrap();
    }
    figures.push(format!(
        "rolling restart of 3 brokers (SIGTERM, start, ISR full, next): {:.0} s",
        rolling.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 3. Two brokers stopped: the ISR below min.insync.replicas for 60 s.
    let stopped: Vec<String> = kafka.broker_names().into_iter().take(2).collect();
    let outage = Instant::now();
    for name in &stopped {
        let k = kafka.clone();
        let n = name.clone();
        blocking(Box::new(move || k.stop(&n))).await.unwrap();
    }
    let both_down = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    for name in &stopped {
        let k = kafka.clone();
        let n = name.clone();
        blocking(Box::new(move || k.restart(&n))).await.unwrap();
    }
    let back = Instant::now();
    let ready_again = wait_both_ready(&[&a, &b], Duration::from_secs(120)).await;
    figures.push(format!(
        "2 of 3 brokers stopped ({:.0} s for the clean shutdowns), both down for {:.0} s (ISR 1 < min.insync.replicas 2): both replicas ready {:.1} s after the brokers were started again",
        both_down.duration_since(outage).as_secs_f64(),
        back.duration_since(both_down).as_secs_f64(),
        ready_again.as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;

    // The load stops; every delivery (and its retries) ends.
    load.stop.store(true, Ordering::Relaxed);
    for c in chats {
        c.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(17)).await;
    stop_watching.store(true, Ordering::Relaxed);
    let not_ready_bodies = readiness.await.unwrap();

    // What is on the topics.
    let admin = kafka.admin_bootstrap();
    let (t1, t2) = (topic.clone(), raw.clone());
    let acked: HashSet<String> = load.ledger.lock().unwrap().acked.keys().cloned().collect();
    let expect = acked.len();
    let (members, raws) = tokio::task::spawn_blocking(move || {
        let config = [("bootstrap.servers".to_owned(), admin)];
        let members = read_topic_with(&config, &t1, 0, Duration::from_secs(3));
        let raws = read_topic_with(&config, &t2, 0, Duration::from_secs(3));
        (members, raws)
    })
    .await
    .unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in members.iter().chain(raws.iter()) {
        *counts.entry(r.headers["event_id"].clone()).or_default() += 1;
    }
    let (summary, lost, detail, unexpected, never_acked, by_status, out_of_order, timeline) = {
        let l = load.ledger.lock().unwrap();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|id| !counts.contains_key(*id))
            .collect();
        let duplicated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
        let unexpected: Vec<&String> = counts
            .keys()
            .filter(|id| !l.attempts.contains_key(*id))
            .collect();
        let never_acked: Vec<String> = l
            .attempts
            .keys()
            .filter(|id| !acked.contains(*id))
            .cloned()
            .collect();
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for attempts in l.attempts.values() {
            for (s, _) in attempts {
                *by_status.entry(*s).or_default() += 1;
            }
        }
        let longest = l
            .acked
            .iter()
            .map(|(id, at)| at.duration_since(l.first[id]))
            .max()
            .unwrap_or_default();

        // Each chat's member records in the order they were sent.
        let mut on_topic: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for r in &members {
            on_topic
                .entry(r.key.clone().unwrap_or_default())
                .or_default()
                .push((r.offset, r.headers["event_id"].clone()));
        }
        let mut out_of_order = Vec::new();
        for (chat, sent) in &l.sent_order {
            let mut records = on_topic.remove(chat).unwrap_or_default();
            records.sort();
            // A second copy is counted below; order is that of first copies.
            let mut seen = HashSet::new();
            let ids: Vec<&String> = records
                .iter()
                .map(|(_, id)| id)
                .filter(|id| seen.insert(*id))
                .collect();
            let sent: Vec<&String> = sent.iter().collect();
            // Records of events acked after the last one counted may follow.
            if ids[..sent.len().min(ids.len())] != sent[..] {
                out_of_order.push(chat.clone());
            }
        }
        let started = l.first.values().min().copied().unwrap_or_else(Instant::now);
        let describe = |dups: &[&(&String, &usize)]| -> Vec<String> {
            dups.iter()
                .map(|(id, n)| {
                    let attempts: Vec<String> = l.attempts[*id]
                        .iter()
                        .map(|(s, at)| {
                            format!("{s}@{:.1}s", at.duration_since(started).as_secs_f64())
                        })
                        .collect();
                    format!("{id} x{n}: {}", attempts.join(" "))
                })
                .collect()
        };
        let detail = describe(&duplicated.iter().collect::<Vec<_>>());
        let timeline: Vec<String> = [
            ("leader killed", fault),
            ("rolling restart", rolling),
            ("two brokers stopped", outage),
            ("back", back),
        ]
        .iter()
        .map(|(what, at)| format!("{what} @{:.1}s", at.duration_since(started).as_secs_f64()))
        .collect();
        let repeats_ok = l.repeat_statuses.iter().filter(|s| **s == 200).count();
        let summary = format!(
        "events {} (acked {expect}, never acked {}); answers by status {by_status:?}; re-deliveries to the other replica {} ({repeats_ok} answered 200); member records {}, raw records {}; lost {}, duplicated {}, unexpected {}; longest from first attempt to 200 {:.1} s",
        l.attempts.len(),
        never_acked.len(),
        l.repeats,
        members.len(),
        raws.len(),
        lost.len(),
        duplicated.len(),
        unexpected.len(),
        longest.as_secs_f64()
    );
        (
            summary,
            lost,
            detail,
            unexpected,
            never_acked,
            by_status,
            out_of_order,
            timeline,
        )
    };
    println!("faults on Apache Kafka: {}", figures.join("; "));
    println!("faults on Apache Kafka: timeline from the first event: {timeline:?}");
    println!("faults on Apache Kafka: {summary}");
    let stalls = not_ready_bodies
        .iter()
        .filter(|b| {
            b.contains("acknowledged no record")
                || b.contains("last record failed")
                || b.contains("min.insync.replicas")
        })
        .count();
    println!(
        "faults on Apache Kafka: /readyz 503 samples {}, of which {stalls} said records could not be acknowledged; e.g. {:?}",
        not_ready_bodies.len(),
        not_ready_bodies.iter().rev().find(|b| b.contains(" 1 of 3"))
    );
    let holds = (
        metric(&a.metrics().await, "feishu_bridge_dedup_holds_total"),
        metric(&b.metrics().await, "feishu_bridge_dedup_holds_total"),
    );
    println!("faults on Apache Kafka: claims held while Kafka could not commit (dedup_holds_total): replica A {}, replica B {}", holds.0, holds.1);
    assert!(lost.is_empty(), "lost: {lost:?} ({summary})");
    assert!(detail.is_empty(), "duplicated: {detail:?} ({summary})");
    assert!(
        out_of_order.is_empty(),
        "chats out of order: {out_of_order:?}"
    );
    assert!(
        unexpected.is_empty(),
        "unexpected: {unexpected:?} ({summary})"
    );
    assert!(
        never_acked.is_empty(),
        "never acked: {never_acked:?} ({summary})"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) > 0,
        "the faults produced no 503: {summary}"
    );
    assert!(
        not_ready_bodies
            .iter()
            .any(|b| b.contains("min.insync.replicas (2)") && b.contains(" 1 of 3")),
        "/readyz never said the ISR was below the minimum: {not_ready_bodies:?}"
    );
    assert!(
        holds.0 >= 1.0 && holds.1 >= 1.0,
        "both replicas held claims while the ISR was below the minimum"
    );

    // The followers' memories are complete: every acknowledged event,
    // delivered again to either replica, is a duplicate.
    let before = (
        webhook_outcome(&a.metrics().await, "duplicate"),
        webhook_outcome(&b.metrics().await, "duplicate"),
    );
    let ids: Vec<String> = acked.iter().cloned().collect();
    for (i, chunk) in ids.chunks(16).enumerate() {
        let replica = i % 2;
        let sends = chunk.iter().map(|id| {
            let (n, seq) = id
                .strip_prefix("akf-")
                .and_then(|r| r.split_once('-'))
                .map(|(n, s)| (n.parse::<usize>().unwrap(), s.parse::<usize>().unwrap()))
                .unwrap();
            let kinds = MEMBER_TYPES.len() + 1;
            let event_type = MEMBER_TYPES.get(seq % kinds).copied().unwrap_or(RAW_TYPE);
            let env = event(id, &format!("oc_akf_{n}"), event_type, seq);
            let load = load.clone();
            async move { load.attempt(replica, &env).await }
        });
        for status in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200);
        }
    }
    let after = (
        webhook_outcome(&a.metrics().await, "duplicate"),
        webhook_outcome(&b.metrics().await, "duplicate"),
    );
    assert_eq!(
        (after.0 - before.0) + (after.1 - before.1),
        ids.len() as f64,
        "every re-delivery after the faults was recognised"
    );
}
