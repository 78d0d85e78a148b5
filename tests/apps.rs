//! Several apps in one deployment (`BRIDGE_APPS_FILE`), end to end: the
//! real binary and a real tansu broker. Each listed app's callbacks arrive on
//! `/webhook/event/<name>` and are checked with that app's keys only
//! (another app's key there is the uniform 401); the single app's settings
//! keep serving `/webhook/event`; a store app's `app_ticket` is answered and
//! never published; an app's key edited in the list applies while running;
//! a list that cannot work stops start-up naming the setting.

#[allow(dead_code)]
#[path = "examples/membership/chat_members.rs"]
mod chat_members;
mod common;
#[path = "common/ws_stand_in.rs"]
mod ws_stand_in;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const HR_KEY: &str = "apps-hr-encrypt-key";
const HR_TOKEN: &str = "apps-hr-verification-token";
const HR_NEW_KEY: &str = "apps-hr-new-encrypt-key";
const SHOP_KEY: &str = "apps-shop-encrypt-key";
const SHOP_TOKEN: &str = "apps-shop-verification-token";
const SETTLE: Duration = Duration::from_millis(1500);

/// A withdrawal of the app `app_id` carrying `token`.
fn event(event_id: &str, app_id: &str, token: &str) -> Value {
    let mut v = withdrawal(event_id, "oc_apps");
    v["header"]["token"] = token.into();
    v["header"]["app_id"] = app_id.into();
    v
}

fn list(hr_key: &str) -> String {
    json!({"apps": [
        {"name": "hr", "app_id": "cli_hr", "encrypt_key": hr_key, "verification_token": HR_TOKEN},
        {"name": "shop", "app_id": "cli_shop", "kind": "store", "encrypt_key": SHOP_KEY, "verification_token": SHOP_TOKEN},
    ]})
    .to_string()
}

/// A file for the list, removed on drop.
struct ListFile(PathBuf);

impl ListFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "fkb-apps-{}-{}.json",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, text).unwrap();
        ListFile(path)
    }
    /// Replaced in one step, as the kubelet updates a Secret volume.
    fn replace(&self, text: &str) {
        let staged = self.0.with_extension("staged");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &self.0).unwrap();
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn post_to(bridge: &Bridge, path: &str, key: &str, envelope: &Value) -> (u16, String) {
    let feishu = Feishu::with_key(key);
    let (body, headers) = feishu.sign(envelope);
    let resp = signed_post(&feishu.client, &bridge.url(path), body, &headers)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("bridge answered");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listed_app_is_verified_on_its_own_path_with_its_own_keys() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "apps");
    let file = ListFile::new(&list(HR_KEY));
    let bridge = Bridge::spawn_with_env(&[
        ("BRIDGE_LISTEN", "127.0.0.1:0"),
        ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("KAFKA_BROKERS", &broker.bootstrap),
        ("KAFKA_TOPIC", &topic),
        ("FEISHU_ENCRYPT_KEY", ENCRYPT_KEY),
        ("FEISHU_VERIFICATION_TOKEN", TOKEN),
        ("BRIDGE_APPS_FILE", file.path()),
        ("FEISHU_SECRET_RELOAD_INTERVAL_MS", "200"),
        ("BRIDGE_LOG_FORMAT", "json"),
        ("BRIDGE_READINESS_INTERVAL_MS", "300"),
    ]);
    bridge.wait_ready(Duration::from_secs(30));
    let ok = (200, r#"{"msg":"success"}"#.to_owned());

    // Each app on its own path, with its own keys; the single app as before.
    let hr = event("apps-hr-1", "cli_hr", HR_TOKEN);
    assert_eq!(post_to(&bridge, "/webhook/event/hr", HR_KEY, &hr).await, ok);
    let shop = event("apps-shop-1", "cli_shop", SHOP_TOKEN);
    assert_eq!(
        post_to(&bridge, "/webhook/event/shop", SHOP_KEY, &shop).await,
        ok
    );
    let single = event("apps-single-1", "cli_single", TOKEN);
    assert_eq!(
        post_to(&bridge, "/webhook/event", ENCRYPT_KEY, &single).await,
        ok
    );

    // Another app's key on a path is a bad signature, like any other.
    let (body, headers) =
        Feishu::with_key(SHOP_KEY).sign(&event("apps-forged", "cli_shop", SHOP_TOKEN));
    let mut forged = headers.clone();
    forged[2].1 = "0".repeat(64);
    let client = reqwest::Client::new();
    let resp = signed_post(&client, &bridge.url("/webhook/event/shop"), body, &forged)
        .send()
        .await
        .unwrap();
    let bad_signature = (resp.status().as_u16(), resp.text().await.unwrap());
    assert_eq!(bad_signature.0, 401);
    let cross = event("apps-cross-1", "cli_hr", HR_TOKEN);
    assert_eq!(
        post_to(&bridge, "/webhook/event/shop", HR_KEY, &cross).await,
        bad_signature
    );
    assert_eq!(
        post_to(&bridge, "/webhook/event", HR_KEY, &cross).await,
        bad_signature
    );
    assert_eq!(
        post_to(&bridge, "/webhook/event/hr", ENCRYPT_KEY, &single).await,
        bad_signature
    );
    let (status, _) = post_to(&bridge, "/webhook/event/nobody", HR_KEY, &hr).await;
    assert_eq!(status, 404);

    // Event ids are unique per app: the same id from two apps is two
    // events, each published once; a repeat within one app is a duplicate.
    let same_hr = event("apps-same-1", "cli_hr", HR_TOKEN);
    let same_shop = event("apps-same-1", "cli_shop", SHOP_TOKEN);
    assert_eq!(
        post_to(&bridge, "/webhook/event/hr", HR_KEY, &same_hr).await,
        ok
    );
    assert_eq!(
        post_to(&bridge, "/webhook/event/shop", SHOP_KEY, &same_shop).await,
        ok
    );
    assert_eq!(
        post_to(&bridge, "/webhook/event/hr", HR_KEY, &same_hr).await,
        ok
    );

    // A store app's ticket (a schema 1.0 event): answered, never published.
    let ticket = json!({"uuid": "apps-ticket-1", "token": SHOP_TOKEN, "ts": "1", "type": "event_callback",
        "event": {"app_id": "cli_shop", "app_ticket": "apps-ticket-secret", "type": "app_ticket"}});
    assert_eq!(
        post_to(&bridge, "/webhook/event/shop", SHOP_KEY, &ticket).await,
        ok
    );

    // hr's key rotated in the list: applied while running, the old one
    // kept as previous.
    let rotated = list(HR_NEW_KEY).replace(
        &format!("\"encrypt_key\":\"{HR_NEW_KEY}\""),
        &format!("\"encrypt_key\":\"{HR_NEW_KEY}\",\"encrypt_key_previous\":\"{HR_KEY}\""),
    );
    assert!(rotated.contains("encrypt_key_previous"), "{rotated}");
    file.replace(&rotated);
    let changed = Instant::now();
    let mut published: Vec<String> = [
        "apps-hr-1",
        "apps-shop-1",
        "apps-single-1",
        "apps-same-1",
        "apps-same-1",
    ]
    .map(String::from)
    .to_vec();
    for i in 0.. {
        let id = format!("apps-hr-old-{i}");
        let old = event(&id, "cli_hr", HR_TOKEN);
        assert_eq!(
            post_to(&bridge, "/webhook/event/hr", HR_KEY, &old).await,
            ok
        );
        published.push(id);
        let id = format!("apps-hr-new-{i}");
        let new = event(&id, "cli_hr", HR_TOKEN);
        let reply = post_to(&bridge, "/webhook/event/hr", HR_NEW_KEY, &new).await;
        if reply == ok {
            published.push(id);
            break;
        }
        assert_eq!(reply, bad_signature);
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "not applied within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_secret_reloads_total{outcome=\"applied\"}"
        ),
        1.0,
        "only hr's secrets changed: {m}"
    );
    assert_eq!(webhook_outcome(&m, "ignored"), 1.0, "the ticket: {m}");
    assert_eq!(webhook_outcome(&m, "duplicate"), 1.0, "hr's repeat: {m}");

    let logs = bridge.log_text();
    for secret in [
        HR_KEY,
        HR_NEW_KEY,
        HR_TOKEN,
        SHOP_KEY,
        SHOP_TOKEN,
        "apps-ticket-secret",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!m.contains(secret), "{secret} in the metrics");
    }
    assert!(bridge.terminate(Duration::from_secs(20)).success());

    // Exactly what was answered 200 as published: nothing forged, no ticket.
    let records = read_topic(&broker.bootstrap, &topic, published.len(), SETTLE);
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r.headers["event_id"].clone())
        .collect();
    ids.sort();
    published.sort();
    assert_eq!(ids, published);
    for r in &records {
        let text = r.value.to_string();
        assert!(
            !text.contains("apps-ticket"),
            "the ticket was published: {text}"
        );
        // Which app and tenant, in the value and the headers.
        assert_eq!(
            r.value["app_id"].as_str(),
            Some(r.headers["app_id"].as_str())
        );
        assert_eq!(r.headers["tenant_key"], "2ca1d211f64f6438");
    }
    // One chat, three apps' records in its one line (one key, one
    // partition), told apart by app_id; a consumer folds each app's view.
    let partitions: std::collections::BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 1, "{records:?}");
    let same: Vec<&str> = records
        .iter()
        .filter(|r| r.headers["event_id"] == "apps-same-1")
        .map(|r| r.headers["app_id"].as_str())
        .collect();
    assert_eq!(same.len(), 2);
    assert!(
        same.contains(&"cli_hr") && same.contains(&"cli_shop"),
        "{same:?}"
    );
    let mut ordered = records.clone();
    ordered.sort_by_key(|r| r.offset);
    let mut apps = chat_members::Apps::default();
    for r in &ordered {
        apps.apply(&r.value).unwrap();
    }
    let views: Vec<&String> = apps.views.keys().collect();
    assert_eq!(views, ["cli_hr", "cli_shop", "cli_single"]);
    for view in apps.views.values() {
        assert!(view.chats.contains_key("oc_apps"));
    }
    // One app's view refuses another app's record.
    let mut hr_only = chat_members::Membership::default();
    let hr_record = ordered
        .iter()
        .find(|r| r.headers["app_id"] == "cli_hr")
        .unwrap();
    let shop_record = ordered
        .iter()
        .find(|r| r.headers["app_id"] == "cli_shop")
        .unwrap();
    hr_only.apply(&hr_record.value).unwrap();
    assert!(hr_only.apply(&shop_record.value).is_err());
}

/// Self-built apps of the list that dial long connections of their own:
/// each connects with its own App ID and secret, its events carry its
/// app_id and are deduplicated within it, it has no callback path, and one
/// whose secret Feishu refuses is said by readiness and its gauge without
/// making the pod unready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_apps_dial_long_connections_of_their_own() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "apps_lc");
    let feishu = ws_stand_in::StandIn::start_apps(
        ws_stand_in::Options::default(),
        &[
            ("cli_lc_hr", "lc-hr-secret"),
            ("cli_lc_it", "lc-it-secret"),
            ("cli_lc_ops", "lc-ops-secret"),
        ],
    )
    .await;
    let (hr, it, ops) = (&feishu[0], &feishu[1], &feishu[2]);
    let file = ListFile::new(
        &json!({"apps": [
            {"name": "hr", "app_id": "cli_lc_hr", "ingress": "long_connection", "app_secret": "lc-hr-secret"},
            {"name": "it", "app_id": "cli_lc_it", "ingress": "long_connection", "app_secret": "lc-it-secret"},
            {"name": "ops", "app_id": "cli_lc_ops", "ingress": "long_connection", "app_secret": "not-the-ops-secret"},
            {"name": "web", "app_id": "cli_web", "encrypt_key": SHOP_KEY, "verification_token": SHOP_TOKEN},
        ]})
        .to_string(),
    );
    let bridge = Bridge::spawn_with_env(&[
        ("BRIDGE_LISTEN", "127.0.0.1:0"),
        ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("KAFKA_BROKERS", &broker.bootstrap),
        ("KAFKA_TOPIC", &topic),
        ("BRIDGE_APPS_FILE", file.path()),
        ("FEISHU_DOMAIN", &hr.base_url),
        ("BRIDGE_LOG_FORMAT", "json"),
        ("BRIDGE_READINESS_INTERVAL_MS", "300"),
    ]);
    bridge.wait_ready(Duration::from_secs(30));
    for app in [hr, it] {
        app.wait(Duration::from_secs(15), "the app's connection", |s| {
            s.connections == 1
        })
        .await;
    }

    // The same event_id in two apps is two events; again in one app, one.
    let lc_event = |id: &str, app_id: &str| {
        let mut v = withdrawal(id, "oc_apps_lc");
        v["header"]["app_id"] = app_id.into();
        serde_json::to_vec(&v).unwrap()
    };
    let mut acked = hr.push(&[(lc_event("apps-lc-1", "cli_lc_hr"), 1)], false);
    acked.extend(hr.push(&[(lc_event("apps-lc-2", "cli_lc_hr"), 3)], false));
    hr.wait_acked(&acked, Duration::from_secs(15)).await;
    let again = hr.push(&[(lc_event("apps-lc-1", "cli_lc_hr"), 1)], false);
    hr.wait_acked(&again, Duration::from_secs(15)).await;
    let on_it = it.push(&[(lc_event("apps-lc-1", "cli_lc_it"), 1)], false);
    it.wait_acked(&on_it, Duration::from_secs(15)).await;

    let (b, t) = (broker.bootstrap.clone(), topic.clone());
    let records = tokio::task::spawn_blocking(move || read_topic(&b, &t, 3, SETTLE))
        .await
        .unwrap();
    let mut seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            assert_eq!(
                r.value["app_id"].as_str(),
                Some(r.headers["app_id"].as_str())
            );
            (
                r.headers["app_id"].clone(),
                r.value["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let want = [
        ("cli_lc_hr", "apps-lc-1"),
        ("cli_lc_hr", "apps-lc-2"),
        ("cli_lc_it", "apps-lc-1"),
    ];
    assert_eq!(
        seen,
        want.map(|(a, e)| (a.to_owned(), e.to_owned())),
        "records: {records:?}"
    );

    // No callback path for an app that dials: its events are not taken
    // from anyone who posts them.
    let posted = reqwest::Client::new()
        .post(bridge.url("/webhook/event/hr"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 404);

    // Feishu refuses ops' secret: the pod stays ready and says so.
    ops.wait(Duration::from_secs(10), "ops' discovery", |s| {
        s.endpoint_calls >= 1
    })
    .await;
    assert_eq!(ops.state().connections, 0);
    let m = bridge.metrics().await;
    for (app, up) in [("hr", 1.0), ("it", 1.0), ("ops", 0.0)] {
        let series = format!("feishu_bridge_long_connection_app_connected{{app=\"{app}\"}}");
        assert!(m.contains(&series), "{series} missing");
        assert_eq!(metric(&m, &series), up, "{series}");
    }
    assert_eq!(metric(&m, "feishu_bridge_long_connection_enabled"), 0.0);
    let readyz = reqwest::get(bridge.admin_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status().as_u16(), 200);
    let body = readyz.text().await.unwrap();
    assert!(
        body.contains("note: the long connection of app ops is not established"),
        "{body}"
    );
    assert!(
        !body.contains("app hr") && !body.contains("app it"),
        "{body}"
    );
    let logs = bridge.log_text();
    assert!(
        logs.contains("long connection refused by Feishu") && logs.contains(r#""app":"ops""#),
        "the refusal is logged with the app's name: {logs}"
    );
    assert!(!logs.contains("lc-hr-secret") && !logs.contains("not-the-ops-secret"));
}

#[test]
fn a_list_that_cannot_work_stops_start_up_naming_the_setting() {
    let dup = json!({"apps": [
        {"name": "hr", "app_id": "cli_1", "encrypt_key": HR_KEY},
        {"name": "hr", "app_id": "cli_2", "encrypt_key": SHOP_KEY},
    ]})
    .to_string();
    let store_ws = json!({"apps": [
        {"name": "shop", "app_id": "cli_1", "kind": "store", "ingress": "long_connection", "encrypt_key": SHOP_KEY},
    ]})
    .to_string();
    for (text, says) in [
        (dup, "apps[1] (hr): the name is used twice"),
        (store_ws, "a store app cannot use the long connection"),
    ] {
        let file = ListFile::new(&text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"))
            .env_clear()
            .envs([
                ("KAFKA_BROKERS", "127.0.0.1:1"),
                ("BRIDGE_APPS_FILE", file.path()),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("invalid setting BRIDGE_APPS_FILE:"), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains(HR_KEY) && !err.contains(SHOP_KEY), "{err}");
    }
}
