//! Memory stays bounded under a flood of unique event_ids: the dedup cache
//! holds at most its capacity, and the process's RSS stops growing once
//! the cache is full.

mod common;

use std::time::Duration;

use common::stand_in::{Pusher, Schedule};
use common::*;

/// Documented bound (docs/guarantees.md): after the cache is full,
/// pushing twice its capacity again in unique ids may grow RSS by at most this.
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;
const CAPACITY: usize = 5000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_event_ids_keeps_the_cache_and_rss_bounded() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "flood");
    let capacity = CAPACITY.to_string();
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[("BRIDGE_DEDUP_CAPACITY", capacity.as_str())],
    );
    let pusher = Pusher::new(bridge.url("/webhook/event"), Schedule(vec![]));
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| withdrawal(&format!("flood-{i}"), &format!("oc_f{}", i % 64)))
            .collect::<Vec<_>>()
    };

    // Fill the cache once, then measure.
    pusher.run(batch(0, CAPACITY), 32, Duration::ZERO).await;
    let before = rss_kib(bridge.pid());
    pusher
        .run(batch(CAPACITY, 2 * CAPACITY), 32, Duration::ZERO)
        .await;
    let after = rss_kib(bridge.pid());

    let m = bridge.metrics().await;
    let entries = metric(&m, "feishu_bridge_dedup_entries");
    let published = metric(
        &m,
        "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"published\"}",
    );
    println!(
        "flood of {} unique ids, capacity {CAPACITY}: dedup entries {entries}, RSS {before} KiB -> {after} KiB ({:+} KiB)",
        3 * CAPACITY,
        after as i64 - before as i64
    );
    assert_eq!(
        published as usize,
        3 * CAPACITY,
        "every unique event is published"
    );
    assert!(
        entries as usize <= CAPACITY,
        "dedup cache above its capacity: {entries}"
    );
    assert!(
        after <= before + RSS_GROWTH_BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
