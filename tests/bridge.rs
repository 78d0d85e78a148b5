//! End to end: the real binary, a real Kafka-protocol broker (tansu) over
//! TCP, signed and encrypted callbacks over HTTP, records read back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_millis(1500);

#[test]
fn murmur2_matches_kafka_reference_values() {
    // Values from the Java client's UtilsTest.testMurmur2.
    assert_eq!(murmur2(b"21"), -973932308);
    assert_eq!(murmur2(b"foobar"), -790332482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
    assert_eq!(murmur2(b"abc"), 479470107);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_event_becomes_a_keyed_record_with_every_field() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "seed");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let before = now_ms();

    let mut envelope: Value = serde_json::from_str(SEED).unwrap();
    envelope["header"]["token"] = TOKEN.into();
    let reply = Feishu::new().push(&bridge, &envelope).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"msg":"success"}"#)
    );

    let records = read_topic(&broker.bootstrap, &topic, 1, SETTLE);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(
        r.key.as_deref(),
        Some("oc_413871888e0d5492e25b173f0812efb7")
    );
    assert_eq!(
        r.partition,
        java_partition(b"oc_413871888e0d5492e25b173f0812efb7", PARTITIONS)
    );
    assert_eq!(r.headers["event_id"], "5e3702a84e847582be8db7fb73283c02");
    assert_eq!(r.headers["event_type"], "im.chat.member.user.withdrawn_v1");
    assert_eq!(r.headers["tenant_key"], "2ca1d211f64f6438");
    assert_eq!(r.headers["app_id"], "cli_9f5343c580712544");
    assert_eq!(r.headers["schema"], "feishu.chat_member_withdrawn.v1");

    let schema: Value = serde_json::from_str(include_str!(
        "../deploy/schema/feishu.chat_member_withdrawn.v1.json"
    ))
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(
        validator.is_valid(&r.value),
        "record does not match its JSON Schema: {}",
        r.value
    );

    let received = r.value["received_at_ms"]
        .as_i64()
        .expect("received_at_ms is an integer");
    assert!(
        received >= before && received <= now_ms(),
        "received_at_ms {received}"
    );
    let mut value = r.value.clone();
    value["received_at_ms"] = json!(0);
    let want: Value = serde_json::from_str(include_str!("fixtures/seed_record.json")).unwrap();
    assert_eq!(value, want);
    // Key order of the value is the documented one.
    let keys: Vec<&String> = r.value.as_object().unwrap().keys().collect();
    assert_eq!(keys, want.as_object().unwrap().keys().collect::<Vec<_>>());

    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"published\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_chat_order_holds_and_chats_land_where_java_would_put_them() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "order");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();
    let chats = ["oc_alpha", "oc_beta", "oc_gamma", "oc_delta"];
    let per_chat = 8;
    // Chats are pushed concurrently, each chat's events in sequence, the
    // way Feishu delivers a busy tenant.
    let mut tasks = Vec::new();
    for chat in chats {
        let feishu = Feishu::new();
        let url_bridge = bridge.addr.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_chat {
                let env = withdrawal(&format!("{chat}-{i}"), chat);
                let (body, headers) = feishu.sign(&env);
                let url = format!("http://{url_bridge}/webhook/event");
                let resp = signed_post(&feishu.client, &url, body, &headers)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(feishu);
    let records = read_topic(&broker.bootstrap, &topic, chats.len() * per_chat, SETTLE);
    assert_eq!(records.len(), chats.len() * per_chat);
    for chat in chats {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(chat))
            .collect();
        assert_eq!(mine.len(), per_chat);
        let expected_partition = java_partition(chat.as_bytes(), PARTITIONS);
        assert!(
            mine.iter().all(|r| r.partition == expected_partition),
            "{chat} spread over partitions"
        );
        let mut by_offset = mine.clone();
        by_offset.sort_by_key(|r| r.offset);
        let ids: Vec<&str> = by_offset
            .iter()
            .map(|r| r.value["event_id"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..per_chat).map(|i| format!("{chat}-{i}")).collect();
        assert_eq!(
            ids,
            want.iter().map(String::as_str).collect::<Vec<_>>(),
            "order of {chat}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_and_concurrent_duplicates_publish_once() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "dedup");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();

    // Sequential: Feishu's retry of an event already acknowledged.
    let env = withdrawal("dup-seq", "oc_dup");
    for _ in 0..3 {
        let r = feishu.push(&bridge, &env).await;
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"msg":"success"}"#));
    }

    // Concurrent: the same event pushed many times at once (each copy is
    // encrypted and signed afresh, as Feishu's re-deliveries are).
    let env = withdrawal("dup-conc", "oc_dup");
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (body, headers) = feishu.sign(&env);
        let client = feishu.client.clone();
        let url = bridge.url("/webhook/event");
        tasks.push(tokio::spawn(async move {
            let resp = signed_post(&client, &url, body, &headers)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    let records = read_topic(&broker.bootstrap, &topic, 2, Duration::from_secs(3));
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r.value["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        records.len(),
        2,
        "expected one record per event_id, got {ids:?}"
    );
    assert!(ids.contains(&"dup-seq") && ids.contains(&"dup-conc"));

    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"published\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"duplicate\"}"
        ),
        25.0
    );
    assert!(metric(&m, "feishu_bridge_dedup_entries") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnormalizable_events_go_to_the_dead_letter_topic() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "dlq");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();

    let mut no_chat = withdrawal("dl-1", "x");
    no_chat["event"].as_object_mut().unwrap().remove("chat_id");
    let mut bad_types = withdrawal("dl-2", "oc_typed");
    bad_types["event"]["external"] = json!("maybe");
    for env in [&no_chat, &bad_types] {
        let r = feishu.push(&bridge, env).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A retry of a dead-lettered event is a duplicate too.
    assert_eq!(feishu.push(&bridge, &no_chat).await.status, 200);

    let dead = read_topic(&broker.bootstrap, &dlq, 2, SETTLE);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let by_id = |id: &str| {
        dead.iter()
            .find(|r| r.headers["event_id"] == id)
            .expect(id)
            .clone()
    };
    let schema: Value =
        serde_json::from_str(include_str!("../deploy/schema/feishu.dead_letter.v2.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(
        dead.iter().all(|d| validator.is_valid(&d.value)),
        "dead letters must match their JSON Schema"
    );
    let d1 = by_id("dl-1");
    assert_eq!(d1.value["schema"], "feishu.dead_letter.v2");
    assert_eq!(d1.value["reason"], "event.chat_id is missing or empty");
    assert_eq!(d1.value["envelope"]["header"]["token"], "[redacted]");
    assert_eq!(d1.value["envelope"]["event"]["name"], "群名称测试");
    assert_eq!(d1.key, None);
    let d2 = by_id("dl-2");
    assert_eq!(d2.key.as_deref(), Some("oc_typed"));
    assert!(d2.value["reason"].as_str().unwrap().contains("wrong type"));
    assert!(d2.headers["reason"].contains("wrong type"));
    assert!(!bridge.log_text().contains(TOKEN));

    assert!(read_topic(&broker.bootstrap, &topic, 0, Duration::from_millis(500)).is_empty());
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"dead_lettered\"}"
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_has_its_status_and_publishes_nothing() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "reject");
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[("BRIDGE_BODY_LIMIT_BYTES", "4096")],
    );
    let feishu = Feishu::new();
    let good = withdrawal("rej-good", "oc_r");
    let (body, headers) = feishu.sign(&good);

    let sign = |body: &[u8]| {
        let ts = headers[0].1.clone();
        let sig = feishu.key.sign(&ts, "n", body);
        vec![
            ("X-Lark-Request-Timestamp", ts),
            ("X-Lark-Request-Nonce", "n".to_owned()),
            ("X-Lark-Signature", sig),
        ]
    };
    let wrong_key = feishu_kafka_bridge::protocol::EncryptKey::new("not the key")
        .encrypt(good.to_string().as_bytes(), [1; 16]);
    let mut wrong_token = good.clone();
    wrong_token["header"]["token"] = "guess".into();
    let (wt_body, wt_headers) = feishu.sign(&wrong_token);
    let old_ts = "1600000000".to_owned();
    let stale = vec![
        ("X-Lark-Request-Timestamp", old_ts.clone()),
        ("X-Lark-Request-Nonce", "n".to_owned()),
        ("X-Lark-Signature", feishu.key.sign(&old_ts, "n", &body)),
    ];

    // (name, body, headers, expected status, expected metric outcome)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            b"{\"encrypt\":".to_vec(),
            sign(b"{\"encrypt\":"),
            400,
            "rejected_malformed_json",
        ),
        (
            "not an object",
            b"[]".to_vec(),
            sign(b"[]"),
            400,
            "rejected_malformed_json",
        ),
        (
            "bad base64",
            br#"{"encrypt":"@@@"}"#.to_vec(),
            sign(br#"{"encrypt":"@@@"}"#),
            400,
            "rejected_bad_base64",
        ),
        (
            "undecryptable",
            json!({"encrypt": wrong_key}).to_string().into_bytes(),
            sign(json!({"encrypt": wrong_key}).to_string().as_bytes()),
            400,
            "rejected_undecryptable",
        ),
        (
            "plaintext with key",
            good.to_string().into_bytes(),
            sign(good.to_string().as_bytes()),
            400,
            "rejected_plaintext_with_key",
        ),
        (
            "bad signature",
            body.clone(),
            vec![
                headers[0].clone(),
                headers[1].clone(),
                ("X-Lark-Signature", "ab".repeat(32)),
            ],
            401,
            "rejected_bad_signature",
        ),
        (
            "signature of another body",
            body.clone(),
            sign(b"{}"),
            401,
            "rejected_bad_signature",
        ),
        (
            "missing signature",
            body.clone(),
            vec![],
            401,
            "rejected_missing_signature",
        ),
        (
            "stale timestamp",
            body.clone(),
            stale,
            401,
            "rejected_stale_timestamp",
        ),
        (
            "wrong token",
            wt_body,
            wt_headers.to_vec(),
            401,
            "rejected_wrong_token",
        ),
        (
            "oversize",
            vec![b' '; 5000],
            vec![],
            413,
            "rejected_body_too_large",
        ),
    ];
    for (name, body, headers, status, label) in &cases {
        let r = feishu.post(&bridge, body.clone(), headers).await;
        assert_eq!(r.status, *status, "{name}: {}", r.body);
        if *status != 413 {
            let err: Value =
                serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{name}: body {}", r.body));
            assert!(
                err["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{name}: {}",
                r.body
            );
        }
        let m = bridge.metrics().await;
        assert!(
            metric(
                &m,
                &format!("feishu_bridge_requests_total{{ingress=\"webhook\",outcome=\"{label}\"}}")
            ) >= 1.0,
            "{name}: no {label}"
        );
    }

    // Valid traffic is unaffected, and only it is published.
    let r = feishu.post(&bridge, body, &headers).await;
    assert_eq!(r.status, 200);
    let records = read_topic(&broker.bootstrap, &topic, 1, SETTLE);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value["event_id"], "rej-good");
    assert!(read_topic(&broker.bootstrap, &dlq, 0, Duration::from_millis(300)).is_empty());

    // The logs say why, and never carry the secrets.
    let logs = bridge.log_text();
    for label in [
        "bad_signature",
        "wrong_token",
        "stale_timestamp",
        "body_too_large",
        "undecryptable",
    ] {
        assert!(logs.contains(label), "no log line for {label}");
    }
    assert!(
        !logs.contains(ENCRYPT_KEY) && !logs.contains(TOKEN),
        "a secret reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_and_other_event_types_are_answered_not_published() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "other");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();

    // Encrypted challenge, unsigned, as Feishu sends it.
    let challenge = json!({"challenge": "c-9f\"x", "token": TOKEN, "type": "url_verification"});
    let (body, _) = feishu.sign(&challenge);
    let r = feishu.post(&bridge, body, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"challenge": "c-9f\"x"})
    );

    let mut other = withdrawal("other-1", "oc_o");
    other["header"]["event_type"] = "im.message.receive_v1".into();
    assert_eq!(feishu.push(&bridge, &other).await.status, 200);
    let v1 = json!({"ts": "1", "uuid": "u1", "token": TOKEN, "type": "event_callback", "event": {"type": "message"}});
    assert_eq!(feishu.push(&bridge, &v1).await.status, 200);

    assert!(read_topic(&broker.bootstrap, &topic, 0, Duration::from_millis(800)).is_empty());
    assert!(read_topic(&broker.bootstrap, &dlq, 0, Duration::from_millis(300)).is_empty());
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"challenge\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"ignored\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_ignored_events_total{event_type=\"im.message.receive_v1\",ingress=\"webhook\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kafka_the_bridge_is_not_ready_and_answers_503() {
    // A port nobody listens on.
    let dead = format!("127.0.0.1:{}", free_port());
    let bridge = Bridge::spawn(
        &dead,
        "withdrawn.nokafka",
        &[("BRIDGE_PUBLISH_DEADLINE_MS", "800")],
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(reqwest_status(&bridge.admin_url("/readyz")).await, 503);
    assert_eq!(reqwest_status(&bridge.admin_url("/healthz")).await, 200);

    let started = std::time::Instant::now();
    let r = Feishu::new()
        .push(&bridge, &withdrawal("nk-1", "oc_nk"))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.retry_after.is_some(), "503 without Retry-After");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"publish_failed\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "feishu_bridge_ready"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_holds_readiness_back_until_it_exists() {
    // Found only at the first dead letter, a missing DLQ would be a 503 for
    // that event and every retry of it: readiness asks for it up front.
    let broker = Broker::shared();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let topic = format!("withdrawn.nodlq.{}.{n}", std::process::id());
    broker.create_topics(&[&topic]);
    let bridge = Bridge::spawn(
        &broker.bootstrap,
        &topic,
        &[
            ("BRIDGE_READINESS_INTERVAL_MS", "200"),
            // Readiness of the producer's topics alone, not the warm start.
            ("BRIDGE_DEDUP_FOLLOW", "false"),
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let ready = reqwest::get(bridge.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("dead-letter"));
    broker.create_topics(&[&format!("{topic}.dlq")]);
    bridge.wait_ready(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_and_exits_zero() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "term");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();
    assert_eq!(
        feishu
            .push(&bridge, &withdrawal("term-1", "oc_t"))
            .await
            .status,
        200
    );
    let logs = bridge.logs.clone();
    let status = bridge.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let logs = logs.lock().unwrap().join("\n");
    assert!(logs.contains("producer flushed"), "{logs}");
    assert_eq!(read_topic(&broker.bootstrap, &topic, 1, SETTLE).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_are_served_on_the_admin_port_only() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "admin");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    assert_ne!(bridge.addr, bridge.admin);

    // What an ingress routing the callback host with `path: /` would expose.
    for path in ["/metrics", "/readyz", "/healthz", "/", "/metrics/"] {
        assert_eq!(reqwest_status(&bridge.url(path)).await, 404, "{path}");
    }
    let get_callback = reqwest::get(bridge.url("/webhook/event")).await.unwrap();
    assert_eq!(get_callback.status(), 405);
    assert_eq!(get_callback.headers()["allow"], "POST");

    let get = |path: &'static str| {
        let url = bridge.admin_url(path);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get("/readyz").await, (200, "ready\n".to_owned()));
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("feishu_bridge_ready 1"), "{metrics}");
    // And no callback on the admin port.
    let feishu = Feishu::new();
    let (body, headers) = feishu.sign(&withdrawal("admin-1", "oc_admin"));
    let r = signed_post(
        &reqwest::Client::new(),
        &bridge.admin_url("/webhook/event"),
        body,
        &headers,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert!(read_topic(&broker.bootstrap, &topic, 0, SETTLE).is_empty());
}

/// Runs the binary with only `env` and returns its exit code and stderr.
fn start_up(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"));
    cmd.env_clear().envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let (code, err) = start_up(&[
        ("KAFKA_PROPERTIES", "enable.idempotence=false"),
        ("KAFKA_BROKERS", "127.0.0.1:1"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("KAFKA_PROPERTIES") && err.contains("enable.idempotence"),
        "{err}"
    );

    let (code, err) = start_up(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("KAFKA_BROKERS"));

    let (code, err) = start_up(&[
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("BRIDGE_LISTEN", "127.0.0.1:18080"),
        ("BRIDGE_ADMIN_LISTEN", "0.0.0.0:18080"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("BRIDGE_ADMIN_LISTEN"), "{err}");

    // A port another process holds is a bad setting too (exit 2, as
    // docs/configuration.md says), named in one line.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (code, err) = start_up(&[
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("BRIDGE_LISTEN", &taken),
        ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("BRIDGE_LISTEN") && err.contains(&taken),
        "{err}"
    );
}

async fn reqwest_status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    feishu_kafka_bridge::pipeline::now_ms()
}
