//! The membership stream: every chat-member change in one per-chat-ordered
//! topic, other events raw, with the real binary on a real broker (tansu).
//!
//! Per chat, a script of changes (users added, one withdrawn, the bot added,
//! a user deleted, another added, the bot removed in some chats) with
//! message events in between, for many chats at once; then the topics are
//! read back and held against what was sent: each event once, per-chat
//! order within each topic and across the two, membership rebuilt by the
//! `membership` example's fold, raw records intact.

// Each test binary uses part of the example's fold.
#[allow(dead_code)]
#[path = "examples/membership/chat_members.rs"]
mod chat_members;
mod common;
#[path = "common/ws_stand_in.rs"]
mod ws_stand_in;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chat_members::{Chat, Membership};
use common::*;
use feishu_kafka_bridge::record::MemberKind;
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_millis(1500);
const MESSAGE: &str = "im.message.receive_v1";

/// Every member type, and messages raw.
fn routing_env(raw_topic: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "BRIDGE_EVENT_TYPES",
            MemberKind::ALL.map(|k| k.event_type()).join(","),
        ),
        ("BRIDGE_RAW_EVENT_TYPES", MESSAGE.to_owned()),
        ("BRIDGE_RAW_TOPIC", raw_topic.to_owned()),
    ]
}

fn as_env<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A member event of `kind` in `chat`, naming `users` (open_ids).
fn member(event_id: &str, chat: &str, kind: MemberKind, users: &[String]) -> Value {
    let mut v = withdrawal(event_id, chat);
    v["header"]["event_type"] = kind.event_type().into();
    v["event"]["name"] = format!("name of {chat}").into();
    let event = v["event"].as_object_mut().unwrap();
    if kind.has_users() {
        let users: Vec<Value> = users
            .iter()
            .map(|id| json!({"name": format!("名 {id}"), "tenant_key": "t1", "user_id": {"open_id": id, "union_id": format!("on_{id}")}}))
            .collect();
        event.insert("users".into(), users.into());
    } else {
        event.remove("users");
    }
    v
}

/// A message event in `chat`: its chat is `event.message.chat_id`.
fn message(event_id: &str, chat: &str) -> Value {
    json!({"schema":"2.0",
        "header":{"event_id":event_id,"event_type":MESSAGE,"create_time":"1608725989000","token":TOKEN,
                  "app_id":"cli_9f5343c580712544","tenant_key":"2ca1d211f64f6438"},
        "event":{"sender":{"sender_id":{"open_id":"ou_sender"},"sender_type":"user","tenant_key":"2ca1d211f64f6438"},
                 "message":{"message_id":format!("om_{event_id}"),"chat_id":chat,"chat_type":"group","message_type":"text",
                            "content":"{\"text\":\"你好 🎉\"}","create_time":"1608725989000"}}})
}

/// One chat's script and the membership it leaves. Chats whose index is a
/// multiple of three keep the bot; the others remove it at the end.
fn script(prefix: &str, n: usize) -> (String, Vec<Value>, Chat) {
    let chat = format!("oc_{prefix}_{n}");
    let user = |name: &str| format!("ou_{prefix}_{n}_{name}");
    let id = |step: usize| format!("{prefix}-{n}-{step}");
    let mut events = vec![
        member(
            &id(0),
            &chat,
            MemberKind::UserAdded,
            &[user("a"), user("b"), user("c")],
        ),
        member(&id(1), &chat, MemberKind::UserWithdrawn, &[user("c")]),
        message(&id(2), &chat),
        member(&id(3), &chat, MemberKind::BotAdded, &[]),
        member(&id(4), &chat, MemberKind::UserDeleted, &[user("a")]),
        message(&id(5), &chat),
        member(&id(6), &chat, MemberKind::UserAdded, &[user("d")]),
    ];
    let keeps_bot = n.is_multiple_of(3);
    if !keeps_bot {
        events.push(member(&id(7), &chat, MemberKind::BotDeleted, &[]));
    }
    let truth = Chat {
        members: [user("b"), user("d")].into(),
        bot: Some(keeps_bot),
        name: Some(format!("name of {chat}")),
    };
    (chat, events, truth)
}

fn event_id(v: &Value) -> String {
    v["header"]["event_id"].as_str().unwrap().to_owned()
}

fn is_message(v: &Value) -> bool {
    v["header"]["event_type"] == MESSAGE
}

/// Everything the topics say, held against the scripts: each event once,
/// per-chat order within each topic (offsets) and across both (record
/// timestamps, taken when the bridge hands a record to its producer),
/// membership rebuilt by the example's fold, raw records intact.
fn check(scripts: &[(String, Vec<Value>, Chat)], members: &[Record], raw: &[Record]) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in members.iter().chain(raw) {
        *count.entry(r.headers["event_id"].clone()).or_default() += 1;
    }
    let sent: Vec<&Value> = scripts.iter().flat_map(|(_, e, _)| e).collect();
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<String> = sent
        .iter()
        .map(|e| event_id(e))
        .filter(|id| !count.contains_key(id))
        .collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    assert!(missing.is_empty(), "not published: {missing:?}");
    assert_eq!(count.len(), sent.len());

    // Per chat, each topic in offset order: the script's order.
    let by_id: HashMap<String, &Record> = members
        .iter()
        .chain(raw)
        .map(|r| (r.headers["event_id"].clone(), r))
        .collect();
    for (chat, events, _) in scripts {
        for (topic, want_message) in [("member", false), ("raw", true)] {
            let want: Vec<String> = events
                .iter()
                .filter(|e| is_message(e) == want_message)
                .map(event_id)
                .collect();
            let mut got: Vec<&Record> = want.iter().map(|id| by_id[id]).collect();
            assert!(
                got.iter().all(|r| r.key.as_deref() == Some(chat.as_str())
                    && r.partition == java_partition(chat.as_bytes(), PARTITIONS)),
                "{chat}: {topic} records keyed by the chat, on its partition"
            );
            got.sort_by_key(|r| r.offset);
            let got: Vec<String> = got.iter().map(|r| r.headers["event_id"].clone()).collect();
            assert_eq!(got, want, "{chat}: {topic} topic out of order");
        }
        // Across the two topics: handed to the producer in script order.
        let stamps: Vec<i64> = events
            .iter()
            .map(|e| by_id[&event_id(e)].timestamp.expect("timestamped"))
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "{chat}: records handed over out of order across types: {stamps:?}"
        );
    }

    // The stream is enough to rebuild membership.
    let mut ordered: Vec<&Record> = members.iter().collect();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    let mut membership = Membership::default();
    for r in ordered {
        membership.apply(&r.value).expect("a member record");
        let schema = r.value["schema"].as_str().unwrap();
        assert_eq!(r.headers["schema"], schema);
        assert_eq!(r.headers["ce_type"], r.value["event_type"]);
        assert!(
            MemberKind::ALL.iter().any(|k| k.schema() == schema
                && k.event_type() == r.value["event_type"]
                && k.has_users() == r.value.get("users").is_some()),
            "{}",
            r.value
        );
    }
    let truth: BTreeMap<String, Chat> = scripts
        .iter()
        .map(|(chat, _, truth)| (chat.clone(), truth.clone()))
        .collect();
    assert_eq!(membership.chats, truth, "membership rebuilt from the topic");

    // Raw records: the envelope as sent, but for the token.
    let sent_by_id: HashMap<String, &Value> = sent.iter().map(|e| (event_id(e), *e)).collect();
    for r in raw {
        let mut want = sent_by_id[&r.headers["event_id"]].clone();
        want["header"]["token"] = "[redacted]".into();
        assert_eq!(r.value, want);
        assert_eq!(r.headers["schema"], "feishu.raw_event.v1");
        assert_eq!(r.headers["ce_type"], MESSAGE);
        assert_eq!(r.headers["event_type"], MESSAGE);
    }
}

fn raw_topic(broker: &Broker, topic: &str) -> String {
    let raw = format!("{topic}.raw");
    broker.create_topics(&[&raw]);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_chats_a_quarter_redelivered_to_another_replica_each_event_once_in_order() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "members");
    let raw = raw_topic(broker, &topic);
    let env = routing_env(&raw);
    let a = Bridge::start(&broker.bootstrap, &topic, &as_env(&env));
    let b = Bridge::start(&broker.bootstrap, &topic, &as_env(&env));
    let feishu = Feishu::new();

    let scripts: Vec<_> = (0..40).map(|n| script("m", n)).collect();
    // Each chat's events one after the other (Feishu's order is the order
    // it delivers in), every chat at once.
    let (feishu, a) = (&feishu, &a);
    let runs = scripts.iter().map(|(_, events, _)| async move {
        for e in events {
            let r = feishu.push(a, e).await;
            assert_eq!(r.status, 200, "{}: {}", event_id(e), r.body);
        }
    });
    futures_util::future::join_all(runs).await;

    // A quarter of everything, seconds later, to the other replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all: Vec<&Value> = scripts.iter().flat_map(|(_, e, _)| e).collect();
    let quarter: Vec<&Value> = all.iter().step_by(4).copied().collect();
    for chunk in quarter.chunks(16) {
        let replies =
            futures_util::future::join_all(chunk.iter().map(|e| feishu.push(&b, e))).await;
        for (e, r) in chunk.iter().zip(replies) {
            assert_eq!(r.status, 200, "re-delivered {}: {}", event_id(e), r.body);
        }
    }

    let messages = all.iter().filter(|e| is_message(e)).count();
    let expect_members = all.len() - messages;
    let (bs, t, r) = (broker.bootstrap.clone(), topic.clone(), raw.clone());
    let (members, raws) = tokio::task::spawn_blocking(move || {
        (
            read_topic(&bs, &t, expect_members, SETTLE),
            read_topic(&bs, &r, messages, SETTLE),
        )
    })
    .await
    .unwrap();
    println!(
        "{} chats, {} events ({} raw), {} re-delivered to another replica: {} member records, {} raw records",
        scripts.len(),
        all.len(),
        messages,
        quarter.len(),
        members.len(),
        raws.len()
    );
    check(&scripts, &members, &raws);
    assert!(read_topic(&broker.bootstrap, &dlq, 0, Duration::from_millis(300)).is_empty());

    let m = b.metrics().await;
    assert_eq!(webhook_outcome(&m, "duplicate"), quarter.len() as f64);
    assert_eq!(webhook_outcome(&m, "published"), 0.0);
    let m = a.metrics().await;
    let published = |t: &str| {
        metric(
            &m,
            &format!("feishu_bridge_events_total{{event_type=\"{t}\",ingress=\"webhook\",outcome=\"published\"}}"),
        )
    };
    assert_eq!(published(MESSAGE), messages as f64);
    assert_eq!(published("im.chat.member.user.added_v1"), 80.0);
    assert_eq!(published("im.chat.member.bot.deleted_v1"), 26.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_member_type_is_published_and_the_old_setting_keeps_working() {
    let broker = Broker::shared();
    let feishu = Feishu::new();
    let added = |id: &str| member(id, "oc_def", MemberKind::UserAdded, &["ou_1".into()]);
    let bot_added = |id: &str| member(id, "oc_def", MemberKind::BotAdded, &[]);

    // The defaults: what README tells users to subscribe to is published.
    let (topic, _) = topics(broker, "defaults");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    for event in [
        added("def-added"),
        bot_added("def-bot"),
        withdrawal("def-withdrawn", "oc_def"),
        message("def-msg", "oc_def"),
    ] {
        assert_eq!(feishu.push(&bridge, &event).await.status, 200);
    }
    let records = read_topic(&broker.bootstrap, &topic, 3, SETTLE);
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r.headers["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["def-added", "def-bot", "def-withdrawn"]);
    let m = bridge.metrics().await;
    assert_eq!(webhook_outcome(&m, "ignored"), 1.0);
    assert_eq!(
        metric(
            &m,
            &format!("feishu_bridge_ignored_events_total{{event_type=\"{MESSAGE}\",ingress=\"webhook\"}}")
        ),
        1.0
    );

    // 0.1.0's default, set explicitly (docs/operations.md, Upgrading):
    // withdrawals only, the rest answered and counted.
    let (topic, _) = topics(broker, "old-default");
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[("BRIDGE_EVENT_TYPES", "im.chat.member.user.withdrawn_v1")],
    );
    for event in [added("old-added"), withdrawal("old-withdrawn", "oc_def")] {
        assert_eq!(feishu.push(&bridge, &event).await.status, 200);
    }
    let records = read_topic(&broker.bootstrap, &topic, 1, SETTLE);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].headers["event_id"], "old-withdrawn");
    assert_eq!(
        records[0].value["schema"],
        "feishu.chat_member_withdrawn.v1"
    );
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_ignored_events_total{event_type=\"im.chat.member.user.added_v1\",ingress=\"webhook\"}"
        ),
        1.0
    );
}

#[test]
fn a_typo_in_the_event_types_stops_start_up_naming_the_setting_and_the_choices() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"))
        .env_clear()
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .env(
            "BRIDGE_EVENT_TYPES",
            "im.chat.member.user.added_v1,im.chat.member.user.withdrawn",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("invalid setting BRIDGE_EVENT_TYPES")
            && err.contains("\"im.chat.member.user.withdrawn\""),
        "{err}"
    );
    for kind in MemberKind::ALL {
        assert!(err.contains(kind.event_type()), "{err}");
    }
}

/// The same script over the long connection, with the raw records on the
/// member topic itself (`BRIDGE_RAW_TOPIC` = `KAFKA_TOPIC`), so that the
/// order across types is exact (offsets, not timestamps): per round, every
/// chat's frames in script order, chats interleaved, steps alternately
/// whole and in three interleaved fragments, and a re-delivery of an
/// earlier event in flight; three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_long_connection_order_holds_across_types_in_frame_order() {
    use ws_stand_in::{Options, StandIn, APP_ID, APP_SECRET};
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "members_lc");
    let stand_in = StandIn::start(Options::default()).await;
    let mut env = routing_env(&topic);
    env.extend([
        ("BRIDGE_INGRESS", "long-connection".to_owned()),
        ("FEISHU_APP_ID", APP_ID.to_owned()),
        ("FEISHU_APP_SECRET", APP_SECRET.to_owned()),
        ("FEISHU_DOMAIN", stand_in.base_url.clone()),
    ]);
    let _bridge = Bridge::start(&broker.bootstrap, &topic, &as_env(&env));
    stand_in
        .wait(Duration::from_secs(10), "a connection", |s| {
            s.connections == 1
        })
        .await;

    let mut scripts = Vec::new();
    for round in 0..3 {
        let batch: Vec<_> = (0..8).map(|n| script(&format!("lc{round}"), n)).collect();
        let longest = batch.iter().map(|(_, e, _)| e.len()).max().unwrap();
        let mut pushed = Vec::new();
        for step in 0..longest {
            let mut frames: Vec<(Vec<u8>, usize)> = batch
                .iter()
                .filter_map(|(_, events, _)| events.get(step))
                .map(|e| {
                    (
                        serde_json::to_vec(e).unwrap(),
                        if step % 2 == 0 { 1 } else { 3 },
                    )
                })
                .collect();
            if step == 3 {
                // Feishu pushing an earlier event of a chat again.
                frames.push((serde_json::to_vec(&batch[0].1[1]).unwrap(), 1));
            }
            pushed.extend(stand_in.push(&frames, step % 2 == 1));
        }
        stand_in.wait_acked(&pushed, Duration::from_secs(30)).await;
        scripts.extend(batch);
    }

    let all: Vec<&Value> = scripts.iter().flat_map(|(_, e, _)| e).collect();
    let (bs, t, n) = (broker.bootstrap.clone(), topic.clone(), all.len());
    let records = tokio::task::spawn_blocking(move || read_topic(&bs, &t, n, SETTLE))
        .await
        .unwrap();
    let (raws, members): (Vec<Record>, Vec<Record>) = records
        .iter()
        .cloned()
        .partition(|r| r.headers["schema"] == "feishu.raw_event.v1");
    println!(
        "long connection: {} chats, {} events: {} member records, {} raw records on one topic",
        scripts.len(),
        all.len(),
        members.len(),
        raws.len()
    );
    check(&scripts, &members, &raws);
    // One topic: each chat's records, in offset order, are its frames' order.
    let mut out_of_order = Vec::new();
    for (chat, events, _) in &scripts {
        let mut got: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(chat.as_str()))
            .collect();
        got.sort_by_key(|r| r.offset);
        let got: Vec<String> = got.iter().map(|r| r.headers["event_id"].clone()).collect();
        let want: Vec<String> = events.iter().map(event_id).collect();
        if got != want {
            out_of_order.push((chat.clone(), got));
        }
    }
    assert!(
        out_of_order.is_empty(),
        "out of frame order across types: {out_of_order:?}"
    );
}
