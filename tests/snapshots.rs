//! Membership snapshots, end to end: the real binary, a real tansu broker,
//! and a stand-in for Feishu's OpenAPI (tests/common/openapi_stand_in.rs)
//! that holds the truth. A consumer rebuilds membership from the member
//! topic with the example's fold (tests/examples/membership/chat_members.rs)
//! and must arrive at the stand-in's truth.

// Each test binary uses part of the example's fold.
#[allow(dead_code)]
#[path = "examples/membership/chat_members.rs"]
mod chat_members;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat_members::Membership;
use common::openapi_stand_in::{OpenApiStandIn, APP_ID, APP_SECRET};
use common::*;
use serde_json::Value;

const SETTLE: Duration = Duration::from_millis(700);

fn app_env(stand_in: &OpenApiStandIn) -> Vec<(&'static str, String)> {
    vec![
        ("FEISHU_APP_ID", APP_ID.to_owned()),
        ("FEISHU_APP_SECRET", APP_SECRET.to_owned()),
        ("FEISHU_DOMAIN", stand_in.url.clone()),
    ]
}

/// `feishu-kafka-bridge snapshot [args]`: exit code and stdout.
fn snapshot_command(
    broker: &Broker,
    topic: &str,
    stand_in: &OpenApiStandIn,
    extra: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"));
    cmd.env_clear()
        .arg("snapshot")
        .args(args)
        .env("KAFKA_BROKERS", &broker.bootstrap)
        .env("KAFKA_TOPIC", topic)
        .env("BRIDGE_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in app_env(stand_in) {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = child::spawn(cmd).expect("the bridge binary");
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The topic's records in partition and offset order, folded.
fn rebuild(records: &[Record]) -> Membership {
    let mut ordered: Vec<&Record> = records.iter().collect();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    let mut m = Membership::default();
    for r in ordered {
        m.apply(&r.value).expect("a member record or a snapshot");
    }
    m
}

fn members_of(m: &Membership) -> BTreeMap<String, BTreeSet<String>> {
    m.chats
        .iter()
        .map(|(id, c)| (id.clone(), c.members.clone()))
        .collect()
}

/// A member event of `event_type` in `chat` naming `users`, made now.
fn member_event(
    event_id: &str,
    event_type: &str,
    chat: &str,
    users: &[&str],
    create_time_ms: i64,
) -> Value {
    let mut v = withdrawal(event_id, chat);
    v["header"]["event_type"] = event_type.into();
    v["header"]["create_time"] = create_time_ms.to_string().into();
    let users: Vec<Value> = users
        .iter()
        .map(|id| serde_json::json!({"name": id, "tenant_key": "t", "user_id": {"open_id": id}}))
        .collect();
    v["event"]["users"] = users.into();
    v
}

fn now_ms() -> i64 {
    feishu_kafka_bridge::pipeline::now_ms()
}

#[test]
fn the_snapshot_command_lists_every_chat_and_the_stream_rebuilds_the_truth() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-all");
    let stand_in = OpenApiStandIn::start();
    let sizes = [
        0, 1, 99, 100, 101, 250, 5000, 2, 3, 7, 20, 42, 64, 150, 199, 201, 300, 333, 512, 999,
    ];
    for (i, n) in sizes.iter().enumerate() {
        stand_in.add_chat(&format!("oc_all{i:02}"), *n);
    }
    let (code, out, err) = snapshot_command(
        broker,
        &topic,
        &stand_in,
        &[("FEISHU_API_RATE_PER_SEC", "500")],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let members: usize = sizes.iter().sum();
    let records: usize = sizes.iter().map(|n| n.div_ceil(1000).max(1)).sum();
    assert!(
        out.contains(&format!(
            "snapshot: 20 chats, {members} members, {records} records, 0 failed"
        )),
        "{out}"
    );
    let read = read_topic(&broker.bootstrap, &topic, records, SETTLE);
    assert_eq!(read.len(), records);
    for r in &read {
        assert_eq!(r.headers["schema"], "feishu.chat_members_snapshot.v2");
        assert_eq!(r.key.as_deref(), r.value["chat_id"].as_str());
        // Whose view: the app that listed, the tenant its chat listing named.
        assert_eq!(
            (r.value["app_id"].as_str(), r.headers["app_id"].as_str()),
            (Some(APP_ID), APP_ID)
        );
        assert_eq!(r.value["tenant_key"], r.value["chat"]["tenant_key"]);
        assert_eq!(r.headers["tenant_key"], "2ca1d211f64f6438");
        assert!(r.value.to_string().len() < 1_000_000);
    }
    let m = rebuild(&read);
    assert_eq!(members_of(&m), stand_in.truth());
    assert!(m.chats.values().all(|c| c.bot == Some(true)));
    assert!(
        !err.contains(APP_SECRET) && !err.contains("tenant-token"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_added_record_then_the_chats_snapshot_in_that_order() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-bot");
    let stand_in = OpenApiStandIn::start();
    stand_in.add_chat("oc_bot300", 300);
    let env = app_env(&stand_in);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bridge = Bridge::start(&broker.bootstrap, &topic, &env);
    let started = Instant::now();
    let r = Feishu::new()
        .push(
            &bridge,
            &member_event(
                "bot-1",
                "im.chat.member.bot.added_v1",
                "oc_bot300",
                &[],
                now_ms(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the answer waited for the listing"
    );
    let read = read_topic(&broker.bootstrap, &topic, 2, SETTLE);
    assert_eq!(read.len(), 2, "{read:?}");
    let mut ordered = read.clone();
    ordered.sort_by_key(|r| r.offset);
    assert_eq!(ordered[0].partition, ordered[1].partition);
    assert_eq!(ordered[0].value["schema"], "feishu.chat_bot_added.v1");
    assert_eq!(
        ordered[1].value["schema"],
        "feishu.chat_members_snapshot.v2"
    );
    assert_eq!(ordered[1].value["trigger"], "bot_added");
    // The tenant is the bot-added event's.
    assert_eq!(
        ordered[1].value["tenant_key"],
        ordered[0].value["tenant_key"]
    );
    assert_eq!(ordered[1].value["app_id"], APP_ID);
    assert_eq!(ordered[1].value["member_total"], 300);
    let m = rebuild(&read);
    assert_eq!(members_of(&m), stand_in.truth());
    let metrics = bridge.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "feishu_bridge_snapshots_total{outcome=\"published\",trigger=\"bot_added\"}"
        ),
        1.0
    );
    // Neither the App Secret nor the tenant token is ever logged or exported.
    let logs = bridge.log_text();
    for secret in [APP_SECRET, "tenant-token"] {
        assert!(
            !logs.contains(secret) && !metrics.contains(secret),
            "{secret}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_slow_listing_and_an_old_retry_after_it_leave_the_truth() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-race");
    let stand_in = OpenApiStandIn::start();
    stand_in.add_chat("oc_race", 300);
    stand_in.state().page_delay = Duration::from_millis(400);
    let env = app_env(&stand_in);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bridge = Bridge::start(&broker.bootstrap, &topic, &env);
    let feishu = Feishu::new();

    // The members before: an addition the bridge published long ago.
    let early = "ou_oc_race_00005";
    let long_ago = now_ms() - 3_600_000;
    let r = feishu
        .push(
            &bridge,
            &member_event(
                "race-0",
                "im.chat.member.user.added_v1",
                "oc_race",
                &[early],
                long_ago,
            ),
        )
        .await;
    assert_eq!(r.status, 200);

    let url = bridge.admin_url("/snapshot?chat_id=oc_race");
    let snapshot = tokio::spawn(async move { reqwest::Client::new().post(url).send().await });
    // While the listing goes page by page: one user joins, one listed on the
    // first page leaves, one on the last page leaves.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let changes = [
        ("race-1", "im.chat.member.user.added_v1", "ou_joined_during"),
        ("race-2", "im.chat.member.user.deleted_v1", early),
        (
            "race-3",
            "im.chat.member.user.withdrawn_v1",
            "ou_oc_race_00290",
        ),
    ];
    for (id, event_type, user) in changes {
        {
            let mut s = stand_in.state();
            let chat = s.chats.get_mut("oc_race").unwrap();
            if event_type.ends_with("added_v1") {
                chat.members.insert(user.to_owned());
            } else {
                chat.members.remove(user);
            }
        }
        let r = feishu
            .push(
                &bridge,
                &member_event(id, event_type, "oc_race", &[user], now_ms()),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let answer = snapshot.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert!(answer["records"].as_u64().unwrap() >= 1, "{answer}");

    // A retry of the early addition that the dedup memory no longer holds
    // (a new id, the old time), after the snapshot: it must not bring the
    // user back.
    let r = feishu
        .push(
            &bridge,
            &member_event(
                "race-old-retry",
                "im.chat.member.user.added_v1",
                "oc_race",
                &[early],
                long_ago,
            ),
        )
        .await;
    assert_eq!(r.status, 200);

    let read = read_topic(&broker.bootstrap, &topic, 6, SETTLE);
    assert!(read.iter().any(|r| r.value["trigger"] == "admin"));
    let m = rebuild(&read);
    assert_eq!(members_of(&m), stand_in.truth());
    assert!(!m.chats["oc_race"].members.contains(early));
}

#[test]
fn frequency_limits_and_a_revoked_token_are_waited_out_under_the_cap() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-limits");
    let stand_in = OpenApiStandIn::start();
    for (i, n) in [250, 120, 99, 300, 1, 0].iter().enumerate() {
        stand_in.add_chat(&format!("oc_lim{i}"), *n);
    }
    {
        let mut s = stand_in.state();
        s.rate_limit_every = Some(3);
        s.revoke_tokens_after = Some(5);
    }
    let cap = 20;
    let (code, out, err) = snapshot_command(
        broker,
        &topic,
        &stand_in,
        &[("FEISHU_API_RATE_PER_SEC", &cap.to_string())],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (rate_limited, tokens_issued, tokens_rejected, calls) = {
        let s = stand_in.state();
        (
            s.rate_limited,
            s.tokens_issued,
            s.tokens_rejected,
            s.calls.clone(),
        )
    };
    assert!(rate_limited >= 5, "{rate_limited}");
    assert!(tokens_issued >= 2 && tokens_rejected >= 1);
    assert!(
        out.contains(&format!("{rate_limited} rate-limit waits")),
        "{out}"
    );
    // No call left faster than the cap (a little slack for the stand-in's
    // own scheduling of when it saw the request).
    let min_gap = Duration::from_secs(1) / cap;
    for w in calls.windows(2) {
        let gap = w[1].0.duration_since(w[0].0);
        assert!(
            gap + Duration::from_millis(8) >= min_gap,
            "{gap:?} between {} and {}",
            w[0].1,
            w[1].1
        );
    }
    let records = 6; // one part a chat
    let read = read_topic(&broker.bootstrap, &topic, records, SETTLE);
    assert_eq!(read.len(), records);
    assert_eq!(members_of(&rebuild(&read)), stand_in.truth());
}

#[test]
fn a_listing_that_fails_half_way_publishes_nothing_of_that_chat() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-half");
    let stand_in = OpenApiStandIn::start();
    stand_in.add_chat("oc_half", 250);
    stand_in.add_chat("oc_whole", 120);
    stand_in.state().fail_members.insert("oc_half".into(), 1);
    let (code, out, err) = snapshot_command(
        broker,
        &topic,
        &stand_in,
        &[("FEISHU_API_RATE_PER_SEC", "200")],
        &["--chat", "oc_half", "--chat", "oc_whole"],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("2 chats, 120 members, 1 records, 1 failed"),
        "{out}"
    );
    assert!(out.contains("oc_half failed"), "{out}");
    let read = read_topic(&broker.bootstrap, &topic, 1, SETTLE);
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].key.as_deref(), Some("oc_whole"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_that_both_see_the_bot_added_leave_the_right_state() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-replicas");
    let stand_in = OpenApiStandIn::start();
    stand_in.add_chat("oc_two", 150);
    let env = app_env(&stand_in);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Bridge::start(&broker.bootstrap, &topic, &env);
    let b = Bridge::start(&broker.bootstrap, &topic, &env);
    let event = member_event(
        "two-bot",
        "im.chat.member.bot.added_v1",
        "oc_two",
        &[],
        now_ms(),
    );
    let feishu = Feishu::new();
    let (ra, rb) = tokio::join!(feishu.push(&a, &event), feishu.push(&b, &event));
    assert_eq!((ra.status, rb.status), (200, 200));
    // Then a change after the snapshot(s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    stand_in
        .state()
        .chats
        .get_mut("oc_two")
        .unwrap()
        .members
        .remove("ou_oc_two_00000");
    let r = feishu
        .push(
            &a,
            &member_event(
                "two-left",
                "im.chat.member.user.deleted_v1",
                "oc_two",
                &["ou_oc_two_00000"],
                now_ms(),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    let read = read_topic(&broker.bootstrap, &topic, 3, SETTLE);
    let snapshots = read
        .iter()
        .filter(|r| r.value["schema"] == "feishu.chat_members_snapshot.v2")
        .count();
    assert!((1..=2).contains(&snapshots), "{snapshots}");
    let m = rebuild(&read);
    assert_eq!(members_of(&m), stand_in.truth());
    assert_eq!(m.chats["oc_two"].bot, Some(true));
}

#[test]
fn snapshots_switched_on_without_credentials_stop_start_up_naming_both_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"))
        .env_clear()
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .env("BRIDGE_SNAPSHOTS", "on")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BRIDGE_SNAPSHOTS")
            && err.contains("FEISHU_APP_ID")
            && err.contains("FEISHU_APP_SECRET"),
        "{err}"
    );
}

#[test]
fn the_charts_snapshot_cronjob_runs_the_binary_and_publishes() {
    // The chart's CronJob rendered by Helm's engine with the app's
    // credentials, its container's args and environment run as the pod
    // would run them, against tansu and the stand-in.
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "snapshot-cron");
    let stand_in = OpenApiStandIn::start();
    stand_in.add_chat("oc_cron_a", 130);
    stand_in.add_chat("oc_cron_b", 7);
    stand_in.add_chat("oc_cron_skipped", 3);
    let values = serde_json::json!({
        "config": {"kafkaBrokers": broker.bootstrap, "kafkaTopic": topic, "kafkaDlqTopic": dlq,
                   "appId": APP_ID, "feishuDomain": stand_in.url},
        "secrets": {"encryptKey": ENCRYPT_KEY, "verificationToken": TOKEN, "appSecret": APP_SECRET},
        "snapshots": {"cronJob": {"enabled": true, "chats": ["oc_cron_a", "oc_cron_b"]}},
    });
    let job = pod::render(&["--cronjob", &values.to_string()]);
    let root = pod::TempDir::new("cron");
    let env = pod::environment(&job, &root, &broker.bootstrap);
    let args: Vec<&str> = job["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "snapshot");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"));
    cmd.env_clear()
        .args(&args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = child::spawn(cmd).unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 chats, 137 members, 2 records, 0 failed"),
        "{stdout}"
    );
    let read = read_topic(&broker.bootstrap, &topic, 2, SETTLE);
    let keys: BTreeSet<&str> = read.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, BTreeSet::from(["oc_cron_a", "oc_cron_b"]));
    assert!(read.iter().all(|r| r.value["trigger"] == "command"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_openapi_leaves_readiness_and_events_alone_and_is_counted() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "snapshot-down");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[
            ("FEISHU_APP_ID", APP_ID),
            ("FEISHU_APP_SECRET", APP_SECRET),
            ("FEISHU_DOMAIN", &nowhere),
            ("FEISHU_API_TIMEOUT_MS", "300"),
        ],
    );
    let r = Feishu::new()
        .push(
            &bridge,
            &member_event(
                "down-bot",
                "im.chat.member.bot.added_v1",
                "oc_down",
                &[],
                now_ms(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(read_topic(&broker.bootstrap, &topic, 1, SETTLE).len(), 1);
    // The listing is retried with backoff, then counted as failed; the
    // bridge stays ready throughout.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(
            reqwest::get(bridge.admin_url("/readyz"))
                .await
                .unwrap()
                .status(),
            200
        );
        let m = bridge.metrics().await;
        let failed = metric(
            &m,
            "feishu_bridge_snapshots_total{outcome=\"failed\",trigger=\"bot_added\"}",
        );
        if failed == 1.0 {
            assert!(
                metric(
                    &m,
                    "feishu_bridge_snapshot_retries_total{trigger=\"bot_added\"}"
                ) >= 1.0
            );
            assert!(
                metric(
                    &m,
                    "feishu_bridge_openapi_calls_total{api=\"tenant_access_token\",outcome=\"retriable\"}"
                ) >= 1.0
            );
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the failed snapshot was never counted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(bridge.log_text().contains("snapshot failed"));
}
