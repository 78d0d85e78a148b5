//! The process's life against the real broker (tansu): SIGTERM under load
//! and a broker that appears only after the bridge started (`kill -9` and a
//! restart are in `replicas.rs`, with the memory that survives them).
//! Verdicts come from the Feishu stand-in's ledger.

mod common;

use std::time::{Duration, Instant};

use common::stand_in::{Attempt, Pusher, Schedule};
use common::*;
use serde_json::Value;

fn load(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| withdrawal(&format!("{prefix}-{i}"), &format!("oc_{prefix}_{}", i % 16)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request_and_loses_nothing() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "sigterm");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let env = [
        ("BRIDGE_LISTEN", listen.as_str()),
        ("BRIDGE_DRAIN_TIMEOUT_SECS", "8"),
    ];
    let first = Bridge::start(&broker.bootstrap, &topic, &env);
    let pusher = Pusher::new(first.url("/webhook/event"), Schedule::compressed());
    let run = pusher.spawn_run(load("st", 300), 16, Duration::from_millis(5));

    tokio::time::sleep(Duration::from_millis(800)).await;
    let logs = first.logs.clone();
    let terminated = Instant::now();
    let status = tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(15)))
        .await
        .unwrap();
    let took = terminated.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?}, beyond the grace period"
    );
    assert!(logs.lock().unwrap().join("\n").contains("producer flushed"));

    // The replacement pod takes over the address; Feishu's retries land there.
    let second = Bridge::start(&broker.bootstrap, &topic, &env);
    run.await.unwrap();

    let broken = pusher
        .ledger
        .count(|a| matches!(a, Attempt::Broken(_) | Attempt::TimedOut));
    let refused = pusher.ledger.count(|a| *a == Attempt::Refused);
    let v = pusher.ledger.verdict(&broker.bootstrap, &topic);
    println!("SIGTERM under load: {} ; exited 0 in {took:?}; {refused} attempts refused while down; {broken} broken", v.summary());
    assert_eq!(
        broken,
        0,
        "requests the bridge had accepted went unanswered: {:?}",
        pusher
            .ledger
            .attempts()
            .iter()
            .filter(|(a, _)| matches!(a, Attempt::Broken(_)))
            .collect::<Vec<_>>()
    );
    v.assert_exactly_once();
    assert!(v.unacked.is_empty(), "gave up on {:?}", v.unacked);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_at_start_then_ready_when_it_appears() {
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let topic = format!("withdrawn.late.{}", std::process::id());
    let bridge = Bridge::spawn(&bootstrap, &topic, &[("BRIDGE_PUBLISH_DEADLINE_MS", "800")]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        reqwest::get(bridge.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );

    let pusher = Pusher::new(bridge.url("/webhook/event"), Schedule(vec![]));
    let early = withdrawal("late-0", "oc_late");
    assert_eq!(pusher.attempt("late-0", &early).await, Attempt::Status(503));

    let broker = Broker::start_on(port);
    broker.create_topics(&[&topic, &format!("{topic}.dlq")]);
    bridge.wait_ready(Duration::from_secs(30));

    let retrying = Pusher {
        schedule: Schedule::compressed(),
        ..pusher.clone()
    };
    let mut events = load("late", 20);
    events[0] = early;
    retrying.run(events, 4, Duration::ZERO).await;
    let v = retrying.ledger.verdict(&broker.bootstrap, &topic);
    println!("kafka appeared after start-up: {}", v.summary());
    v.assert_exactly_once();
    assert_eq!(v.acked, 20);
}
