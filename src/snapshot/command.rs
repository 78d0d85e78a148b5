//! `feishu-kafka-bridge snapshot [--chat ID]…`: one reconcile, then exit.
//! The chart and the plain manifests run it as an optional CronJob, so
//! that one pod of the cluster reconciles, not every replica.
//!
//! It covers every app it has OpenAPI credentials for: the single app's
//! settings, and each listed app with its `app_secret`; a store app in
//! every tenant it is known to be installed in (the tenants its events
//! came from, which the bridge keeps on the internal topic with the app's
//! ticket).

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::watch;

use super::{Snapshotter, Snapshotters, Summary};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::record::Trigger;
use crate::sink::Sink;
use crate::tickets;

/// How long the command waits for the internal topic to be read.
const LOAD_WAIT: Duration = Duration::from_secs(30);

/// Runs the snapshots and prints the summary; the exit code is 0 when
/// every chat was published, 1 when any failed.
pub async fn run(config: Config, only: Vec<String>) -> anyhow::Result<u8> {
    let listed = config.apps.0.iter().any(|a| a.app_secret.is_some());
    if config.openapi.client.is_none() && !listed {
        bail!("invalid setting FEISHU_APP_ID: the snapshot command needs the app's credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET (or FEISHU_APP_SECRET_FILE), or a listed app's app_secret in BRIDGE_APPS_FILE");
    }
    let metrics = Metrics::new();
    let sink = Sink::new(&config, metrics.clone())
        .map_err(|e| anyhow::anyhow!("cannot create the Kafka producer: {e}"))?;
    let book = tickets::book(&config, &metrics);
    let (stop, stopped) = watch::channel(false);
    let reader = match &book {
        Some(book) => Some(tickets::read(&config, book, stopped)?),
        None => None,
    };
    if let Some(book) = &book {
        if tokio::time::timeout(LOAD_WAIT, book.wait_loaded())
            .await
            .is_err()
        {
            println!("snapshot: the internal topic was not read within {} s: store apps' tenants are not known", LOAD_WAIT.as_secs());
        }
    }
    let snapshotters = Snapshotters::new(&config, &sink, &metrics, book.as_ref())?;
    let started = Instant::now();
    let mut total = Summary::default();
    let mut failed_listings = Vec::new();
    let mut runs: Vec<(String, &Snapshotter, Option<String>)> = Vec::new();
    if let Some(single) = snapshotters.single() {
        runs.push((single.api().app_id().to_owned(), single, None));
    }
    for (app_id, snapshotter) in snapshotters.listed() {
        match (&book, snapshotter.api().is_store()) {
            (Some(book), true) if only.is_empty() => {
                for tenant in book.tenants_of(app_id) {
                    runs.push((app_id.to_owned(), snapshotter, Some(tenant)));
                }
            }
            // A chat asked for by id has no tenant to list it in.
            (_, true) => {
                println!("snapshot: store app {app_id}: --chat is not used for store apps")
            }
            (_, false) => runs.push((app_id.to_owned(), snapshotter, None)),
        }
    }
    for (app_id, snapshotter, tenant) in &runs {
        match snapshotter
            .run_in(tenant.as_deref(), &only, Trigger::Command)
            .await
        {
            Ok(s) => {
                total.chats += s.chats;
                total.members += s.members;
                total.records += s.records;
                total.failures.extend(s.failures);
            }
            Err(e) => failed_listings.push(match tenant {
                Some(t) => format!("{app_id} in tenant {t}: {e}"),
                None => format!("{app_id}: {e}"),
            }),
        }
    }
    let flushed = tokio::task::spawn_blocking({
        let sink = sink.clone();
        let timeout = config.flush_timeout;
        move || sink.flush(timeout)
    })
    .await;
    let _ = stop.send(true);
    if let Some(reader) = reader {
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    }
    for failure in &failed_listings {
        println!("snapshot: listing the chats failed: {failure}");
    }
    if runs.len() == failed_listings.len() && !runs.is_empty() {
        return Ok(1);
    }
    let waits = runs
        .first()
        .map_or(0, |(_, s, _)| s.api().metrics().rate_limit_waits());
    println!(
        "snapshot: {} chats, {} members, {} records, {} failed, {} rate-limit waits, {:.1} s",
        total.chats,
        total.members,
        total.records,
        total.failures.len(),
        waits,
        started
            .elapsed()
            .as_secs_f64()
            .max(Duration::from_millis(1).as_secs_f64())
    );
    for (chat_id, why) in &total.failures {
        println!("snapshot: {chat_id} failed: {why}");
    }
    if !matches!(flushed, Ok(Ok(()))) {
        println!("snapshot: the producer did not flush within BRIDGE_FLUSH_TIMEOUT_SECS");
        return Ok(1);
    }
    Ok(u8::from(
        !total.failures.is_empty() || !failed_listings.is_empty(),
    ))
}
