//! `feishu-kafka-bridge snapshot [--chat ID]…`: one reconcile, then exit.
//! The chart and the plain manifests run it as an optional CronJob, so
//! that one pod of the cluster reconciles, not every replica.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::Snapshotter;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::record::Trigger;
use crate::sink::Sink;

/// Runs the snapshots and prints the summary; the exit code is 0 when
/// every chat was published, 1 when any failed.
pub async fn run(config: Config, only: Vec<String>) -> anyhow::Result<u8> {
    if config.openapi.client.is_none() {
        bail!("invalid setting FEISHU_APP_ID: the snapshot command needs the app's credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET (or FEISHU_APP_SECRET_FILE)");
    }
    let metrics = Metrics::new();
    let sink = Sink::new(&config, metrics.clone())
        .map_err(|e| anyhow::anyhow!("cannot create the Kafka producer: {e}"))?;
    let Some(snapshotter): Option<Snapshotter> = crate::snapshotter(&config, &sink, &metrics)?
    else {
        bail!("the OpenAPI client is not configured");
    };
    let started = Instant::now();
    let summary = snapshotter.run(&only, Trigger::Command).await;
    let flushed = tokio::task::spawn_blocking({
        let sink = sink.clone();
        let timeout = config.flush_timeout;
        move || sink.flush(timeout)
    })
    .await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            println!("snapshot: listing the chats failed: {e}");
            return Ok(1);
        }
    };
    let waits = snapshotter.api().metrics().rate_limit_waits();
    println!(
        "snapshot: {} chats, {} members, {} records, {} failed, {} rate-limit waits, {:.1} s",
        summary.chats,
        summary.members,
        summary.records,
        summary.failures.len(),
        waits,
        started
            .elapsed()
            .as_secs_f64()
            .max(Duration::from_millis(1).as_secs_f64())
    );
    for (chat_id, why) in &summary.failures {
        println!("snapshot: {chat_id} failed: {why}");
    }
    if !matches!(flushed, Ok(Ok(()))) {
        println!("snapshot: the producer did not flush within BRIDGE_FLUSH_TIMEOUT_SECS");
        return Ok(1);
    }
    Ok(u8::from(!summary.failures.is_empty()))
}
