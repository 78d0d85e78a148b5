//! Long-connection ingress against an in-repo Feishu stand-in
//! (tests/common/ws_stand_in.rs) and the real broker (tansu), with the real
//! bridge binary; the Kafka-failure case uses librdkafka's mock cluster for
//! fault injection and the bridge in-process.

mod common;
#[path = "common/ws_stand_in.rs"]
mod ws_stand_in;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::in_process::{mock_cluster, InProcess, TOPIC};
use common::{metric, read_topic, topics, withdrawal, Bridge, Broker};
use feishu_kafka_bridge::config::{IngressMode, LongConnectionConfig, Secret};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{json, Value};
use ws_stand_in::{Endpoint, Handshake, Options, StandIn, APP_ID, APP_SECRET};

fn env_for<'a>(stand_in: &'a StandIn, pong_timeout_ms: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("BRIDGE_INGRESS", "long-connection"),
        ("FEISHU_APP_ID", APP_ID),
        ("FEISHU_APP_SECRET", APP_SECRET),
        ("FEISHU_DOMAIN", stand_in.base_url.as_str()),
        ("FEISHU_PONG_TIMEOUT_MS", pong_timeout_ms),
    ]
}

/// The real broker, a fresh topic, a stand-in (ping 1 s, reconnect nonce 0)
/// and the bridge binary in long-connection mode, connected to it.
async fn connected(
    test: &str,
    pong_timeout_ms: &str,
) -> (&'static Broker, String, StandIn, Bridge) {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, test);
    let stand_in = StandIn::start(Options::default()).await;
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &env_for(&stand_in, pong_timeout_ms),
    );
    stand_in
        .wait(Duration::from_secs(10), "a connection", |s| {
            s.connections == 1
        })
        .await;
    (broker, topic, stand_in, bridge)
}

fn event(id: &str, chat: &str) -> Vec<u8> {
    serde_json::to_vec(&withdrawal(id, chat)).unwrap()
}

async fn read(broker: &str, topic: &str, expect: usize) -> Vec<common::Record> {
    let (b, t) = (broker.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&b, &t, expect, Duration::from_secs(2)))
        .await
        .unwrap()
}

/// The mock cluster, a stand-in and the bridge in-process with both
/// ingresses (so it is ready before it connects), connected.
async fn in_process(
    deadline_ms: u64,
    props: &[(&str, &str)],
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    StandIn,
    InProcess,
) {
    let (cluster, bootstrap) = mock_cluster();
    let stand_in = StandIn::start(Options::default()).await;
    let mut config = InProcess::config(bootstrap.clone(), deadline_ms, props);
    config.ingress = IngressMode::Both;
    config.long_connection = Some(LongConnectionConfig {
        app_id: APP_ID.into(),
        app_secret: Secret::new(APP_SECRET),
        domain: stand_in.base_url.clone(),
        pong_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    });
    let bridge = InProcess::start_config(config).await;
    stand_in
        .wait(Duration::from_secs(10), "a connection", |s| {
            s.connections == 1
        })
        .await;
    (cluster, bootstrap, stand_in, bridge)
}

fn ids(records: &[common::Record]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in records {
        *m.entry(r.value["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_fragmented_interleaved_and_repeated_events_arrive_once_each() {
    let (broker, topic, stand_in, bridge) = connected("lc_events", "5000").await;

    // Whole events, then fragmented ones (3, 4 and 7 parts) interleaved,
    // then a re-delivery of an event under a new message_id, an event of
    // another type, and a card frame.
    let mut pushed = stand_in.push(
        &(0..5)
            .map(|i| (event(&format!("lc-whole-{i}"), &format!("oc_w{i}")), 1))
            .collect::<Vec<_>>(),
        false,
    );
    pushed.extend(stand_in.push(
        &[
            (event("lc-frag-3", "oc_f"), 3),
            (event("lc-frag-4", "oc_f"), 4),
            (event("lc-frag-7", "oc_g"), 7),
        ],
        true,
    ));
    pushed.extend(stand_in.push(&[(event("lc-whole-0", "oc_w0"), 2)], false));
    let mut other: Value = withdrawal("lc-other", "oc_o");
    other["header"]["event_type"] = "im.message.receive_v1".into();
    pushed.extend(stand_in.push(&[(serde_json::to_vec(&other).unwrap(), 1)], false));
    stand_in.push_card();

    stand_in.wait_acked(&pushed, Duration::from_secs(15)).await;
    {
        let st = stand_in.state();
        assert!(st.acks.iter().all(|a| a.code == 200), "{:?}", st.acks);
        assert_eq!(
            st.acks.len(),
            pushed.len(),
            "one ack per event, none for the card: {:?}",
            st.acks
        );
        assert!(st.acks.iter().all(|a| a
            .biz_rt
            .as_deref()
            .is_some_and(|v| v.parse::<u64>().is_ok())));
    }

    let records = read(&broker.bootstrap, &topic, 8).await;
    let counts = ids(&records);
    assert_eq!(counts.len(), 8, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    for r in &records {
        assert_eq!(
            r.key.as_deref(),
            r.value["chat_id"].as_str(),
            "keyed by chat_id"
        );
        assert_eq!(
            r.value["users"].as_array().map(Vec::len),
            Some(1),
            "whole record: {}",
            r.value
        );
    }

    let m = bridge.metrics().await;
    let lc = |outcome: &str| {
        metric(
            &m,
            &format!(
                "feishu_bridge_requests_total{{ingress=\"long_connection\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(lc("published"), 8.0, "{m}");
    assert_eq!(lc("duplicate"), 1.0, "{m}");
    assert_eq!(lc("ignored"), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_long_connection_frames_total{type=\"card\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "feishu_bridge_long_connection_connected"), 1.0);
    // Long connection only: no callback listener at all, and the admin
    // listener has no callback route.
    assert!(
        bridge.addr.is_empty(),
        "callback listener bound: {}",
        bridge.addr
    );
    assert_eq!(
        common::reqwest::blocking_get(&bridge.admin_url("/webhook/event")).unwrap(),
        404,
        "no webhook route in long-connection-only mode"
    );

    // Shutdown: exit 0, and the socket is closed with a close frame.
    let status = bridge.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    stand_in
        .wait(Duration::from_secs(5), "a close frame", |s| {
            s.close_frames == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_half_open_connection_is_replaced_within_ping_interval_plus_pong_timeout() {
    let (broker, topic, stand_in, bridge) = connected("lc_half_open", "1000").await;
    stand_in
        .wait(Duration::from_secs(5), "a ping", |s| !s.pings.is_empty())
        .await;

    let silent_at = Instant::now();
    stand_in.go_silent();
    // Documented bound: the next ping within PingInterval (1 s), the pong
    // timeout (1 s), then the first reconnect waits up to ReconnectNonce (0).
    stand_in
        .wait(Duration::from_secs(5), "a second connection", |s| {
            s.connections == 2
        })
        .await;
    let took = stand_in.state().connected_at[1] - silent_at;
    assert!(
        took <= Duration::from_millis(2000 + 700),
        "reconnected after {took:?}"
    );

    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_long_connection_reconnects_total{reason=\"ping_timeout\"}"
        ),
        1.0,
        "{m}"
    );
    let ids = stand_in.push(&[(event("lc-after-half-open", "oc_h"), 1)], false);
    stand_in.wait_acked(&ids, Duration::from_secs(10)).await;
    assert_eq!(read(&broker.bootstrap, &topic, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_dropped_mid_frame_reconnects_and_unacked_events_are_pushed_again() {
    let (broker, topic, stand_in, bridge) = connected("lc_drop", "5000").await;
    stand_in.drop_mid_frame();
    stand_in
        .wait(Duration::from_secs(5), "a second connection", |s| {
            s.connections == 2
        })
        .await;
    let ids = stand_in.push(&[(event("lc-after-drop", "oc_d"), 2)], false);
    stand_in.wait_acked(&ids, Duration::from_secs(10)).await;
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_long_connection_reconnects_total{reason=\"io_error\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(read(&broker.bootstrap, &topic, 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_answers_stop_retrying_and_busy_answers_do_not() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "lc_fatal");
    let cases: [(&str, Option<Endpoint>, Option<Handshake>, bool); 5] = [
        (
            "endpoint refuses the credentials",
            Some(Endpoint::Code(10014)),
            None,
            true,
        ),
        (
            "too many connections",
            None,
            Some(Handshake::Refuse {
                status: 514,
                auth_code: 1_000_040_350,
            }),
            true,
        ),
        (
            "forbidden",
            None,
            Some(Handshake::Refuse {
                status: 403,
                auth_code: 0,
            }),
            true,
        ),
        ("endpoint busy", Some(Endpoint::Code(1)), None, false),
        (
            "handshake 514, other code",
            None,
            Some(Handshake::Refuse {
                status: 514,
                auth_code: 7,
            }),
            false,
        ),
    ];
    for (name, endpoint, handshake, fatal) in cases {
        let stand_in = StandIn::start(Options::default()).await; // reconnect interval 1 s, nonce 0
        if let Some(e) = endpoint {
            stand_in.set_endpoint(e);
        }
        if let Some(h) = handshake {
            stand_in.set_handshake(h);
        }
        let bridge = Bridge::spawn(&broker.bootstrap, &topic, &env_for(&stand_in, "5000"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = stand_in.state().endpoint_calls;
        let ready = common::reqwest::blocking_get(&bridge.admin_url("/readyz")).unwrap();
        assert_eq!(ready, 503, "{name}: never ready without a connection");
        if fatal {
            assert_eq!(calls, 1, "{name}: no retry after a fatal answer");
            assert!(
                bridge.log_text().contains("not retrying"),
                "{name}: {}",
                bridge.log_text()
            );
        } else {
            assert!(calls >= 2, "{name}: retried ({calls} calls)");
        }
        assert!(
            !bridge.log_text().contains(APP_SECRET),
            "{name}: the secret is in the log"
        );
        assert!(
            !bridge.log_text().contains("secret-ticket"),
            "{name}: the URL's ticket is in the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_config_in_a_pong_is_applied() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "lc_pong_config");
    let stand_in = StandIn::start(Options {
        ping_interval: 60,
        ..Options::default()
    })
    .await;
    stand_in.send_config_in_next_pong(json!({"PingInterval": 1}));
    let _bridge = Bridge::start(&broker.bootstrap, &topic, &env_for(&stand_in, "5000"));
    // The first ping goes out at once; its pong sets a 1 s interval, so
    // more pings follow long before the original 60 s.
    stand_in
        .wait(Duration::from_secs(5), "three pings", |s| {
            s.pings.len() >= 3
        })
        .await;
    let st = stand_in.state();
    let gap = st.pings[2] - st.pings[1];
    assert!(
        gap >= Duration::from_millis(800) && gap <= Duration::from_millis(1500),
        "{gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_kafka_write_is_acked_500_and_lands_after_the_repush() {
    let (cluster, bootstrap, stand_in, bridge) =
        in_process(2000, &[("message.timeout.ms", "1000")]).await;

    // Every produce attempt fails for a while (retriable), so librdkafka
    // gives up when message.timeout.ms runs out.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 200],
    );
    let ids = stand_in.push(&[(event("lc-kafka-fails", "oc_k"), 1)], false);
    stand_in
        .wait(Duration::from_secs(10), "a 500 ack", |s| {
            s.acks.iter().any(|a| a.code == 500)
        })
        .await;
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    // The stand-in pushes again after each 500, as Feishu does.
    stand_in.wait_acked(&ids, Duration::from_secs(20)).await;
    let m = bridge.metrics().await;
    assert!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"long_connection\",outcome=\"publish_failed\"}"
        ) >= 1.0,
        "{m}"
    );
    bridge.stop().await;
    let records = read(&bootstrap, TOPIC, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value["event_id"], "lc-kafka-fails");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_events_acks_them_and_closes_the_socket() {
    // A deadline well above the slow acks below: under a loaded CI machine,
    // 800 ms per round trip once went past 2 s and the acks became 500s.
    let (cluster, bootstrap, stand_in, bridge) = in_process(6000, &[]).await;

    // Kafka answers slowly, so the events are still in flight at shutdown.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(800))
        .unwrap();
    let pushed = stand_in.push(
        &(0..5)
            .map(|i| (event(&format!("lc-drain-{i}"), "oc_drain"), 1))
            .collect::<Vec<_>>(),
        false,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stand_in.state().acks.is_empty(),
        "acked before Kafka answered"
    );
    bridge.stop().await;
    assert!(
        stand_in.acked_ok(&pushed),
        "acks: {:?}",
        stand_in.state().acks
    );
    stand_in
        .wait(Duration::from_secs(2), "a close frame", |s| {
            s.close_frames == 1
        })
        .await;
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    assert_eq!(ids(&read(&bootstrap, TOPIC, 5).await).len(), 5);
    drop(cluster);
}

/// Per-chat order: many events over few chats, written back to back on one
/// connection (so they are handled concurrently), whole and in fragments,
/// with a re-delivery of a chat's earlier event between two of its events:
/// in every chat the records come out in the order their frames (their last
/// fragments) arrived, over repeated rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_chat_order_on_the_topic_is_frame_order() {
    let (broker, topic, stand_in, _bridge) = connected("lc_order", "5000").await;
    let mut expected: HashMap<String, Vec<usize>> = HashMap::new();
    let mut total = 0;
    for round in 0..3 {
        let chat = |i: usize| format!("oc_order_{round}_{}", i % 8);
        let id = |i: usize| format!("ord-{round}-{i:04}");
        // Whole events, with a re-delivery of event i-8 (same chat) after
        // every tenth event: it is in flight or remembered, never published
        // again, and must not disturb the order.
        let mut whole = Vec::new();
        for i in 0..120 {
            whole.push((event(&id(i), &chat(i)), 1));
            expected.entry(chat(i)).or_default().push(i);
            if i % 10 == 9 {
                whole.push((event(&id(i - 8), &chat(i - 8)), 1));
            }
        }
        // Then fragmented ones, 3 parts each, interleaved: each completes
        // with its last fragment, in push order.
        let fragmented: Vec<(Vec<u8>, usize)> = (120..160)
            .map(|i| {
                expected.entry(chat(i)).or_default().push(i);
                (event(&id(i), &chat(i)), 3)
            })
            .collect();
        let mut pushed = stand_in.push(&whole, false);
        pushed.extend(stand_in.push(&fragmented, true));
        stand_in.wait_acked(&pushed, Duration::from_secs(30)).await;
        total += 160;
    }
    let records = read(&broker.bootstrap, &topic, total).await;
    assert_eq!(records.len(), total, "every event once");
    // Per chat, in offset order (one chat, one partition).
    let mut seen: HashMap<String, Vec<(i64, usize)>> = HashMap::new();
    for r in &records {
        let id = r.value["event_id"].as_str().unwrap();
        let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        seen.entry(r.key.clone().unwrap())
            .or_default()
            .push((r.offset, i));
    }
    let mut out_of_order = Vec::new();
    for (chat, mut got) in seen {
        got.sort();
        let got: Vec<usize> = got.into_iter().map(|(_, i)| i).collect();
        if got != expected[&chat] {
            out_of_order.push((chat, got));
        }
    }
    assert!(
        out_of_order.is_empty(),
        "chats out of frame order: {out_of_order:?}"
    );
}
