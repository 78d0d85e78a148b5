//! Fault injection with librdkafka's own mock cluster (in-process, over
//! TCP): slow acks past the publish deadline, failed deliveries, a full
//! producer queue and a broker outage. The bridge runs in-process here so
//! that the cluster can be steered while requests are in flight.

mod common;

use std::time::Duration;

use common::in_process::{mock_cluster as cluster, InProcess, TOPIC};
use common::stand_in::{Attempt, Pusher, Schedule, Verdict};
use common::{metric, read_topic, withdrawal, Feishu};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_the_deadline_turns_the_retry_into_a_duplicate() {
    let (cluster, bootstrap) = cluster();
    let bridge = InProcess::start(bootstrap.clone(), 500, &[]).await;
    let feishu = Feishu::new();
    let env = withdrawal("slow-1", "oc_slow");

    cluster
        .broker_round_trip_time(1, Duration::from_millis(2500))
        .unwrap();
    let started = std::time::Instant::now();
    let (status, body) = bridge.push(&feishu, &env).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered after {:?}",
        started.elapsed()
    );

    // A copy arriving while the first is still in flight waits, then gets 503 too.
    let (status, _) = bridge.push(&feishu, &env).await;
    assert_eq!(status, 503);

    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    // Wait for the late ack; then Feishu's retry is a duplicate.
    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = bridge.push(&feishu, &env).await;
        if status == 200 {
            assert_eq!(body, r#"{"msg":"success"}"#);
            break;
        }
        assert!(std::time::Instant::now() < give_up, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"published\"}"
        ),
        0.0
    );
    assert!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"duplicate\"}"
        ) >= 1.0
    );
    bridge.stop().await;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, TOPIC, 1, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(
        records.len(),
        1,
        "exactly one record for a slow-acked event"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_answers_503_and_the_retry_publishes() {
    let (cluster, bootstrap) = cluster();
    let bridge = InProcess::start(bootstrap.clone(), 2000, &[("message.timeout.ms", "1000")]).await;
    let feishu = Feishu::new();
    let env = withdrawal("fail-1", "oc_fail");

    // Every produce attempt for a while fails with a retriable error, so
    // librdkafka gives up when message.timeout.ms runs out.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 200],
    );
    let (status, body) = bridge.push(&feishu, &env).await;
    assert_eq!(status, 503, "{body}");
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = bridge.push(&feishu, &env).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "retry never published");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = bridge.metrics().await;
    assert!(
        metric(
            &m,
            "feishu_bridge_kafka_delivery_errors_total{kind=\"retriable\"}"
        ) >= 1.0,
        "{m}"
    );
    bridge.stop().await;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, TOPIC, 1, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 1);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_not_ready_then_queue_full_503_then_recovery() {
    let (cluster, bootstrap) = cluster();
    let bridge = InProcess::start(
        bootstrap.clone(),
        500,
        &[("queue.buffering.max.messages", "1")],
    )
    .await;
    let feishu = Feishu::new();

    cluster.broker_down(1).unwrap();
    bridge.wait_ready(false, Duration::from_secs(15)).await;

    let (status, _) = bridge.push(&feishu, &withdrawal("down-1", "oc_down")).await;
    assert_eq!(status, 503);
    // The queue holds one message: the next event is refused at once.
    let started = std::time::Instant::now();
    let (status, body) = bridge.push(&feishu, &withdrawal("down-2", "oc_down")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("queue is full"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(400));
    let m = bridge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "feishu_bridge_kafka_delivery_errors_total{kind=\"queue_full\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "feishu_bridge_producer_queue_messages"), 1.0);

    cluster.broker_up(1).unwrap();
    bridge.wait_ready(true, Duration::from_secs(20)).await;
    // Feishu's retries land: the first as a duplicate of its late ack, the second as new.
    for id in ["down-1", "down-2"] {
        let give_up = std::time::Instant::now() + Duration::from_secs(15);
        while bridge.push(&feishu, &withdrawal(id, "oc_down")).await.0 != 200 {
            assert!(std::time::Instant::now() < give_up, "{id} never landed");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    bridge.stop().await;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, TOPIC, 2, Duration::from_secs(1))
    })
    .await
    .unwrap();
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r.value["event_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["down-1", "down-2"]);
    drop(cluster);
}

/// Events spread over `chats` chats, so that every partition sees traffic.
fn load(prefix: &str, n: usize, chats: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            withdrawal(
                &format!("{prefix}-{i}"),
                &format!("oc_{prefix}_{}", i % chats),
            )
        })
        .collect()
}

async fn verdict_of(pusher: &Pusher, bootstrap: String) -> Verdict {
    let ledger = pusher.ledger.clone();
    tokio::task::spawn_blocking(move || ledger.verdict(&bootstrap, TOPIC))
        .await
        .unwrap()
}

/// Every non-200 answer came within the publish deadline (plus scheduling slack).
fn assert_answers_within(pusher: &Pusher, deadline: Duration) {
    for (attempt, took) in pusher.ledger.attempts() {
        if let Attempt::Status(_) = attempt {
            assert!(
                took < deadline + Duration::from_millis(700),
                "{attempt:?} took {took:?}"
            );
        }
        assert!(
            !matches!(attempt, Attempt::Broken(_) | Attempt::TimedOut),
            "{attempt:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_under_steady_load_loses_and_duplicates_nothing() {
    let (cluster, bootstrap) = cluster();
    let deadline = Duration::from_millis(1000);
    let bridge = InProcess::start(bootstrap.clone(), deadline.as_millis() as u64, &[]).await;
    let pusher = Pusher::new(bridge.url(), Schedule::compressed());
    let run = pusher.spawn_run(load("bd", 150, 12), 8, Duration::from_millis(20));

    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker_down(1).unwrap();
    let down_at = std::time::Instant::now();
    bridge.wait_ready(false, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    cluster.broker_up(1).unwrap();
    let up_at = std::time::Instant::now();
    bridge.wait_ready(true, Duration::from_secs(20)).await;
    let recovered = up_at.elapsed();
    run.await.unwrap();

    let failed = pusher.ledger.count(|a| *a == Attempt::Status(503));
    println!("broker down 3 s under load: ready again {recovered:?} after the broker came back");
    assert!(
        failed > 0,
        "the outage produced no 503: it did not test anything"
    );
    assert_answers_within(&pusher, deadline);
    let v = verdict_of(&pusher, bootstrap).await;
    println!(
        "broker down 3 s under load: {} ({failed} answers were 503)",
        v.summary()
    );
    v.assert_exactly_once();
    assert!(v.unacked.is_empty(), "gave up on {:?}", v.unacked);
    bridge.stop().await;
    drop(cluster);
}

/// Runs steady load while the mock broker fails Produce requests with `errors`.
///
/// One request in flight per connection, because of a mock artefact: after
/// a failed batch, a real broker rejects every later batch of an idempotent
/// producer as out of sequence until the failed one is retried, and
/// librdkafka relies on that (a later success "implicitly acks" earlier
/// batches, which Kafka must then have written). librdkafka's mock broker
/// checks no sequence numbers for a non-transactional producer: it appends
/// the later batch, and librdkafka then reports the failed batch as
/// delivered although the mock never wrote it. With several requests in
/// flight this showed up as 1 "lost" record in about 8 runs, for
/// NOT_ENOUGH_REPLICAS as for REQUEST_TIMED_OUT; with one in flight there
/// is no later batch to mislead it. The bridge's own handling is unchanged.
async fn produce_errors_under_load(prefix: &str, errors: &[RDKafkaRespErr]) {
    let (cluster, bootstrap) = cluster();
    let one_in_flight = [("max.in.flight.requests.per.connection", "1")];
    let bridge = InProcess::start(bootstrap.clone(), 2000, &one_in_flight).await;
    let pusher = Pusher::new(bridge.url(), Schedule::compressed());
    cluster.request_errors(RDKafkaApiKey::Produce, errors);
    pusher
        .run(load(prefix, 120, 9), 8, Duration::from_millis(10))
        .await;
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    let v = verdict_of(&pusher, bootstrap).await;
    println!(
        "{} produce errors injected ({prefix}): {}",
        errors.len(),
        v.summary()
    );
    v.assert_exactly_once();
    assert!(v.unacked.is_empty(), "gave up on {:?}", v.unacked);
    let m = bridge.metrics().await;
    assert!(
        metric(
            &m,
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"published\"}"
        ) > 0.0
    );
    bridge.stop().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_persisted_produce_errors_are_retried_without_loss_or_duplicates() {
    // Errors after which Kafka has certainly not written the batch. Each
    // failed request costs a retry backoff (100 ms growing to 1 s), so the
    // count fits in the stand-in's compressed retry window.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR,
    ]
    .repeat(5);
    produce_errors_under_load("np", &errors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn possibly_persisted_produce_errors_and_disconnects_lose_and_duplicate_nothing() {
    // Errors after which the batch may or may not have been written: the
    // idempotent producer retries with the same sequence numbers.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
    ]
    .repeat(3);
    produce_errors_under_load("pp", &errors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_partition_under_load_loses_and_duplicates_nothing() {
    let (cluster, bootstrap) = cluster();
    // librdkafka 2.12.1's mock broker dereferences the missing leader when it
    // writes Produce v10's CurrentLeader tag (rdkafka_mock_handlers.c:53) and
    // crashes; Produce v9 has no such tag. Its Fetch handler does the same
    // from v12 on (rdkafka_mock_handlers.c:294), which the dedup follower's
    // consumer meets, so Fetch is capped at v11. The bridge under test is
    // unchanged.
    cluster
        .apiversion(RDKafkaApiKey::Produce, Some(3), Some(9))
        .unwrap();
    cluster
        .apiversion(RDKafkaApiKey::Fetch, Some(4), Some(11))
        .unwrap();
    let deadline = Duration::from_millis(1000);
    let bridge = InProcess::start(bootstrap.clone(), deadline.as_millis() as u64, &[]).await;
    let pusher = Pusher::new(bridge.url(), Schedule::compressed());
    let run = pusher.spawn_run(load("nl", 150, 12), 8, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.partition_leader(TOPIC, 0, None).unwrap();
    bridge.wait_ready(false, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.partition_leader(TOPIC, 0, Some(1)).unwrap();
    bridge.wait_ready(true, Duration::from_secs(20)).await;
    run.await.unwrap();

    assert_answers_within(&pusher, deadline);
    let v = verdict_of(&pusher, bootstrap).await;
    let failed = pusher.ledger.count(|a| *a == Attempt::Status(503));
    println!(
        "partition 0 leaderless 3 s under load: {} ({failed} answers were 503)",
        v.summary()
    );
    assert!(failed > 0, "the leaderless partition produced no 503");
    v.assert_exactly_once();
    assert!(v.unacked.is_empty(), "gave up on {:?}", v.unacked);
    bridge.stop().await;
    drop(cluster);
}
