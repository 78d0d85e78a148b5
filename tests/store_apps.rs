//! A store app (应用商店应用) and two self-built apps in one deployment of
//! two replicas: the real binary twice, a real tansu broker, and the
//! OpenAPI stand-in playing Feishu's auth and chat APIs. The ticket Feishu
//! pushes to one replica reaches the other through the internal topic; a
//! missing ticket is asked for and the snapshot waits for it; each tenant's
//! chat is listed with that tenant's own token; the ticket never reaches
//! the record topics.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::openapi_stand_in::OpenApiStandIn;
use common::*;
use serde_json::{json, Value};

const SHOP_ID: &str = "cli_store_shop";
const SHOP_KEY: &str = "store-shop-encrypt-key";
const SHOP_TOKEN: &str = "store-shop-verification-token";
const SHOP_SECRET: &str = "store-shop-app-secret";
const HR_KEY: &str = "store-hr-encrypt-key";
const HR_TOKEN: &str = "store-hr-verification-token";
const IT_KEY: &str = "store-it-encrypt-key";
const IT_TOKEN: &str = "store-it-verification-token";
const TICKET: &str = "store-ticket-pushed-once";
const SETTLE: Duration = Duration::from_millis(1500);

fn list() -> String {
    json!({"apps": [
        {"name": "hr", "app_id": "cli_store_hr", "encrypt_key": HR_KEY, "verification_token": HR_TOKEN},
        {"name": "it", "app_id": "cli_store_it", "encrypt_key": IT_KEY, "verification_token": IT_TOKEN},
        {"name": "shop", "app_id": SHOP_ID, "kind": "store", "encrypt_key": SHOP_KEY,
         "verification_token": SHOP_TOKEN, "app_secret": SHOP_SECRET},
    ]})
    .to_string()
}

/// A member event of `event_type` of app `app_id` in `tenant`'s `chat`.
fn event(id: &str, event_type: &str, app_id: &str, token: &str, tenant: &str, chat: &str) -> Value {
    let mut v = withdrawal(id, chat);
    v["header"]["event_type"] = event_type.into();
    v["header"]["app_id"] = app_id.into();
    v["header"]["token"] = token.into();
    v["header"]["tenant_key"] = tenant.into();
    v
}

/// The app_ticket event (schema 1.0) Feishu pushes to a store app.
fn ticket_event(ticket: &str) -> Value {
    json!({"uuid": "f0c0ffee-ticket-event", "token": SHOP_TOKEN, "ts": "1700000000.1", "type": "event_callback",
           "event": {"app_id": SHOP_ID, "app_ticket": ticket, "type": "app_ticket"}})
}

async fn post_to(bridge: &Bridge, path: &str, key: &str, envelope: &Value) -> u16 {
    let feishu = Feishu::with_key(key);
    let (body, headers) = feishu.sign(envelope);
    signed_post(&feishu.client, &bridge.url(path), body, &headers)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("bridge answered")
        .status()
        .as_u16()
}

async fn readyz(bridge: &Bridge) -> (u16, String) {
    let r = reqwest::get(bridge.admin_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until `check` holds, polling.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct ListFile(PathBuf);

impl Drop for ListFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_pushed_to_one_replica_serves_the_others_snapshots_in_each_tenant() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "store");
    let internal = format!("{topic}.internal");
    let raw = format!("{topic}.raw");
    broker.create_topics(&[&internal, &raw]);
    let stand_in = OpenApiStandIn::start();
    stand_in.store_app(SHOP_ID, SHOP_SECRET);
    stand_in.add_store_chat("oc_store_x", "tenant_x", 3);
    stand_in.add_store_chat("oc_store_y", "tenant_y", 2);
    let file =
        ListFile(std::env::temp_dir().join(format!("fkb-store-{}.json", std::process::id())));
    std::fs::write(&file.0, list()).unwrap();
    let env = [
        ("BRIDGE_LISTEN", "127.0.0.1:0"),
        ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("KAFKA_BROKERS", broker.bootstrap.as_str()),
        ("KAFKA_TOPIC", topic.as_str()),
        ("BRIDGE_APPS_FILE", file.0.to_str().unwrap()),
        ("BRIDGE_INTERNAL_TOPIC", internal.as_str()),
        ("BRIDGE_RAW_TOPIC", raw.as_str()),
        (
            "BRIDGE_RAW_EVENT_TYPES",
            "app_open,app_status_change,app_uninstalled",
        ),
        ("FEISHU_DOMAIN", stand_in.url.as_str()),
        ("BRIDGE_LOG_FORMAT", "json"),
        ("BRIDGE_READINESS_INTERVAL_MS", "300"),
    ];
    let one = Bridge::spawn_with_env(&env);
    let two = Bridge::spawn_with_env(&env);
    one.wait_ready(Duration::from_secs(30));
    two.wait_ready(Duration::from_secs(30));

    // No ticket anywhere yet: Feishu is asked for one; both replicas are
    // ready (events publish) and say what they wait for.
    eventually("the ticket asked for", Duration::from_secs(20), || {
        stand_in
            .state()
            .store
            .as_ref()
            .is_some_and(|s| s.resends >= 1)
    })
    .await;
    let (status, body) = readyz(&one).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("store app shop is waiting for its app_ticket"),
        "{body}"
    );
    let m = two.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!("feishu_bridge_app_ticket_waiting{{app=\"{SHOP_ID}\"}}")
        ),
        1.0,
        "{m}"
    );

    // Each app on its own path with its own keys; another's key is 401.
    let hr = event(
        "store-hr-1",
        "im.chat.member.user.withdrawn_v1",
        "cli_store_hr",
        HR_TOKEN,
        "tenant_hr",
        "oc_store_x",
    );
    assert_eq!(post_to(&one, "/webhook/event/hr", HR_KEY, &hr).await, 200);
    let it = event(
        "store-it-1",
        "im.chat.member.user.withdrawn_v1",
        "cli_store_it",
        IT_TOKEN,
        "tenant_hr",
        "oc_store_x",
    );
    assert_eq!(post_to(&two, "/webhook/event/it", IT_KEY, &it).await, 200);
    assert_eq!(post_to(&two, "/webhook/event/it", HR_KEY, &hr).await, 401);
    assert_eq!(post_to(&one, "/webhook/event/shop", IT_KEY, &it).await, 401);

    // The bot joins a chat in tenant X through replica 2, before any ticket:
    // the record publishes at once; the snapshot waits for the ticket.
    let joined_x = event(
        "store-bot-x",
        "im.chat.member.bot.added_v1",
        SHOP_ID,
        SHOP_TOKEN,
        "tenant_x",
        "oc_store_x",
    );
    assert_eq!(
        post_to(&two, "/webhook/event/shop", SHOP_KEY, &joined_x).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stand_in
        .state()
        .store
        .as_ref()
        .unwrap()
        .app_tokens
        .is_empty());

    // Feishu pushes the ticket to replica 1 only.
    stand_in.push_ticket(TICKET);
    assert_eq!(
        post_to(&one, "/webhook/event/shop", SHOP_KEY, &ticket_event(TICKET)).await,
        200
    );

    // Replica 2 learned it through Kafka and snapshots tenant X's chat with
    // tenant X's token, made from that ticket.
    let read = read_topic(&broker.bootstrap, &topic, 4, SETTLE);
    let snapshots: Vec<&Record> = read
        .iter()
        .filter(|r| r.value["schema"] == "feishu.chat_members_snapshot.v2")
        .collect();
    assert_eq!(snapshots.len(), 1, "{read:?}");
    let x = &snapshots[0].value;
    assert_eq!(
        (
            x["chat_id"].as_str(),
            x["app_id"].as_str(),
            x["tenant_key"].as_str()
        ),
        (Some("oc_store_x"), Some(SHOP_ID), Some("tenant_x"))
    );
    assert_eq!(x["member_total"], 3);
    {
        let state = stand_in.state();
        let store = state.store.as_ref().unwrap();
        assert!(
            store.app_tokens.iter().all(|(_, ticket)| ticket == TICKET),
            "{:?}",
            store.app_tokens
        );
        assert_eq!(store.tenant_tokens.get("tenant_x"), Some(&1));
    }
    let m = two.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!(
                "feishu_bridge_app_tickets_total{{app=\"{SHOP_ID}\",source=\"internal_topic\"}}"
            )
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            &format!("feishu_bridge_app_ticket_waiting{{app=\"{SHOP_ID}\"}}")
        ),
        0.0,
        "{m}"
    );
    let m = one.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!("feishu_bridge_app_tickets_total{{app=\"{SHOP_ID}\",source=\"callback\"}}")
        ),
        1.0,
        "{m}"
    );
    let (_, body) = readyz(&one).await;
    assert!(!body.contains("waiting"), "{body}");

    // A second tenant: its chat is listed with its own token.
    let joined_y = event(
        "store-bot-y",
        "im.chat.member.bot.added_v1",
        SHOP_ID,
        SHOP_TOKEN,
        "tenant_y",
        "oc_store_y",
    );
    assert_eq!(
        post_to(&one, "/webhook/event/shop", SHOP_KEY, &joined_y).await,
        200
    );
    let read = read_topic(&broker.bootstrap, &topic, 6, SETTLE);
    let y: Vec<&Value> = read
        .iter()
        .map(|r| &r.value)
        .filter(|v| {
            v["schema"] == "feishu.chat_members_snapshot.v2" && v["chat_id"] == "oc_store_y"
        })
        .collect();
    assert_eq!(y.len(), 1, "{read:?}");
    assert_eq!(
        (y[0]["tenant_key"].as_str(), y[0]["member_total"].as_u64()),
        (Some("tenant_y"), Some(2))
    );
    {
        let state = stand_in.state();
        let store = state.store.as_ref().unwrap();
        assert_eq!(
            store.tenant_tokens.get("tenant_y"),
            Some(&1),
            "{:?}",
            store.tenant_tokens
        );
    }

    // The install lifecycle (schema 1.0 only) is routed raw, keyed by the
    // tenant, once per uuid whichever replica a retry reaches.
    let uninstalled = json!({"uuid": "store-uninstalled-1", "token": SHOP_TOKEN, "ts": "1700000001.5", "type": "event_callback",
        "event": {"app_id": SHOP_ID, "tenant_key": "tenant_y", "type": "app_uninstalled"}});
    assert_eq!(
        post_to(&one, "/webhook/event/shop", SHOP_KEY, &uninstalled).await,
        200
    );
    // Feishu retries 15 s and more later; the other replica knows by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        post_to(&two, "/webhook/event/shop", SHOP_KEY, &uninstalled).await,
        200
    );
    assert_eq!(webhook_outcome(&two.metrics().await, "duplicate"), 1.0);
    let lifecycle = read_topic(&broker.bootstrap, &raw, 1, SETTLE);
    assert_eq!(lifecycle.len(), 1, "{lifecycle:?}");
    let r = &lifecycle[0];
    assert_eq!(r.key.as_deref(), Some("tenant_y"));
    assert_eq!(r.headers["schema"], "feishu.raw_event_1_0.v1");
    assert_eq!(
        (
            r.headers["event_id"].as_str(),
            r.headers["event_type"].as_str()
        ),
        ("store-uninstalled-1", "app_uninstalled")
    );
    assert_eq!(
        (
            r.headers["app_id"].as_str(),
            r.headers["tenant_key"].as_str()
        ),
        (SHOP_ID, "tenant_y")
    );
    assert_eq!(r.value["token"], "[redacted]");
    assert_eq!(r.value["event"]["type"], "app_uninstalled");

    // Every record carries its app and tenant; the chat that three apps'
    // bots are in is one line; the ticket is on no record topic, nor in a log.
    let logs = format!("{}{}", one.log_text(), two.log_text());
    for secret in [TICKET, SHOP_SECRET, SHOP_KEY, HR_KEY, IT_KEY] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    assert!(one.terminate(Duration::from_secs(20)).success());
    assert!(two.terminate(Duration::from_secs(20)).success());
    let read = read_topic(&broker.bootstrap, &topic, 6, SETTLE);
    let in_x: Vec<&Record> = read
        .iter()
        .filter(|r| r.key.as_deref() == Some("oc_store_x"))
        .collect();
    let apps: std::collections::BTreeSet<&str> =
        in_x.iter().map(|r| r.headers["app_id"].as_str()).collect();
    assert_eq!(
        apps.into_iter().collect::<Vec<_>>(),
        ["cli_store_hr", "cli_store_it", SHOP_ID]
    );
    assert_eq!(
        in_x.iter()
            .map(|r| r.partition)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1
    );
    for r in &read {
        assert!(
            !r.value.to_string().contains(TICKET),
            "the ticket on the record topic: {r:?}"
        );
        assert_eq!(
            r.headers["app_id"],
            r.value["app_id"].as_str().unwrap_or_default()
        );
        assert!(!r.headers["tenant_key"].is_empty(), "{r:?}");
    }
    // The internal topic: the ticket, and the tenants the store app's
    // events came from (where it is installed).
    let internal_records = read_topic(&broker.bootstrap, &internal, 3, SETTLE);
    let mut keys: Vec<&str> = internal_records
        .iter()
        .filter_map(|r| r.key.as_deref())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("app_ticket/{SHOP_ID}"),
            format!("tenant/{SHOP_ID}/tenant_x"),
            format!("tenant/{SHOP_ID}/tenant_y"),
        ]
    );

    // The snapshot command (the CronJob) covers every tenant the store app
    // is known in, each with its own token, from the internal topic alone.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"));
    cmd.env_clear()
        .arg("snapshot")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env.iter().filter(|(k, _)| !k.ends_with("_LISTEN")) {
        cmd.env(k, v);
    }
    let out = child::spawn(cmd)
        .expect("the bridge binary")
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("snapshot: 2 chats, 5 members, 2 records, 0 failed"),
        "{stdout}"
    );
    {
        let state = stand_in.state();
        let store = state.store.as_ref().unwrap();
        assert_eq!(
            store.tenant_tokens.get("tenant_x"),
            Some(&2),
            "{:?}",
            store.tenant_tokens
        );
        assert_eq!(
            store.tenant_tokens.get("tenant_y"),
            Some(&2),
            "{:?}",
            store.tenant_tokens
        );
    }
    let read = read_topic(&broker.bootstrap, &topic, 8, SETTLE);
    let by_command: Vec<&Value> = read
        .iter()
        .map(|r| &r.value)
        .filter(|v| v["trigger"] == "command")
        .collect();
    let mut tenants: Vec<&str> = by_command
        .iter()
        .filter_map(|v| v["tenant_key"].as_str())
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["tenant_x", "tenant_y"]);

    // By hand, on the admin port of a replica started now (it learns the
    // ticket from the internal topic): a listed app by name, a store app in
    // the tenant named; each case that cannot work says why.
    let three = Bridge::spawn_with_env(&env);
    three.wait_ready(Duration::from_secs(30));
    let post = |query: &str| {
        let url = three.admin_url(&format!("/snapshot?{query}"));
        async move {
            let r = reqwest::Client::new().post(url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post("chat_id=oc_store_y&app=shop&tenant_key=tenant_y").await;
    assert_eq!((status, body["members"].as_u64()), (200, Some(2)), "{body}");
    for (query, want, says) in [
        ("chat_id=oc_store_y&app=shop", 400, "tenant_key is required"),
        ("chat_id=oc_store_y&app=nope", 404, "no app named nope"),
        ("chat_id=oc_store_y&app=hr", 503, "app hr has no app_secret"),
        ("chat_id=oc_store_y", 503, "FEISHU_APP_ID"),
    ] {
        let (status, body) = post(query).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(says),
            "{query}: {body}"
        );
    }
    let read = read_topic(&broker.bootstrap, &topic, 9, SETTLE);
    let by_hand: Vec<&Value> = read
        .iter()
        .map(|r| &r.value)
        .filter(|v| v["trigger"] == "admin")
        .collect();
    assert_eq!(by_hand.len(), 1, "{read:?}");
    assert_eq!(
        (
            by_hand[0]["chat_id"].as_str(),
            by_hand[0]["tenant_key"].as_str(),
            by_hand[0]["app_id"].as_str()
        ),
        (Some("oc_store_y"), Some("tenant_y"), Some(SHOP_ID))
    );
}
