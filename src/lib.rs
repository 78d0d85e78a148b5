//! feishu-kafka-bridge: receives Feishu/Lark events (HTTP callbacks or the
//! long connection), verifies and deduplicates them, and publishes the
//! chat-member family as normalized records keyed by `chat_id`, and any
//! other routed type raw.
//!
//! `main` parses the configuration and calls [`run`]; everything else is
//! here so that tests and the demo drive the same code.

pub mod admin;
pub mod allocator;
pub mod callbacks;
pub mod clock;
pub mod cloudevents;
pub mod config;
pub mod dedup;
pub mod demo;
pub mod destination;
pub mod fence;
pub mod follower;
pub mod ingress;
pub mod longconn;
pub mod message;
pub mod metrics;
pub mod openapi;
pub mod order;
pub mod pipeline;
pub mod protocol;
pub mod publish_error;
pub mod readiness;
pub mod record;
pub mod reload;
pub mod routing;
pub mod secret;
pub mod server;
pub mod sink;
pub mod snapshot;
pub mod tickets;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{oneshot, watch, Notify};
use tracing::{error, info, warn};

use crate::admin::Admin;
use crate::config::{Config, IngressMode};
use crate::dedup::Dedup;
use crate::follower::Follower;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::readiness::Readiness;
use crate::routing::{RawRoute, RawTypes};
use crate::server::Listeners;
use crate::sink::Sink;

/// The admin listener answers probes and scrapes, never many at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serves until `shutdown` resolves, then drains in-flight requests (at most
/// `drain_timeout`) and flushes the producer (at most `flush_timeout`). The
/// admin listener keeps answering (readiness now 503) until the flush is
/// done, so probes and the last scrape see the drain.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let sink = Sink::new(&config, metrics.clone())
        .map_err(|e| anyhow::anyhow!("cannot create the Kafka producer: {e}"))?;
    // Shared through Kafka: incomplete until the follower's warm start has
    // read the topics back. Per process: complete (and empty) at once.
    let dedup = if config.dedup_follow {
        Dedup::incomplete(config.dedup_ttl, config.dedup_capacity)
    } else {
        Dedup::new(config.dedup_ttl, config.dedup_capacity)
    };
    let follower = if config.dedup_follow {
        Some(
            Follower::new(&config, dedup.clone(), metrics.clone())
                .map_err(|e| anyhow::anyhow!("cannot create the dedup follower's consumer: {e}"))?,
        )
    } else {
        None
    };
    let readiness = Arc::new(Readiness::new(
        config.ingress == IngressMode::LongConnection,
        dedup.clone(),
    ));
    metrics.register_event_types(config.routing.members().map(|k| k.event_type()));
    if let Some(RawRoute {
        types: RawTypes::Listed(types),
        ..
    }) = config.routing.raw()
    {
        metrics.register_event_types(types.iter().map(String::as_str));
    }
    let tickets = tickets::book(&config, &metrics);
    if let Some(t) = &tickets {
        readiness.note_tickets(t.clone());
    }
    let snapshotters = snapshot::Snapshotters::new(&config, &sink, &metrics, tickets.as_ref())?;
    let mut pipeline = Pipeline::new(dedup, sink.clone(), config.routing.clone());
    if let Some(t) = &tickets {
        pipeline = pipeline.with_tickets(t.clone());
    }
    match snapshotters.is_empty() {
        false if config.openapi.on_bot_added => {
            pipeline = pipeline.with_snapshots_on_bot_added(snapshotters.clone());
            info!("snapshots on: a chat's members are listed and published when the bot is added to it");
        }
        false => info!("snapshots on bot.added off (BRIDGE_SNAPSHOTS=off); POST /snapshot on the admin port still works"),
        true => info!("snapshots off: set FEISHU_APP_ID and FEISHU_APP_SECRET (or FEISHU_APP_SECRET_FILE), or a listed app's app_secret, to list a chat's members when the bot is added to it"),
    }

    let mut callbacks = callbacks::callbacks(&config, &pipeline, &metrics);
    let admin = Arc::new(Admin {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        pipeline: pipeline.clone(),
        snapshotters: snapshotters.clone(),
    });

    let stopping = Arc::new(Notify::new());
    let readiness_task = tokio::spawn(watch_readiness(
        sink.clone(),
        readiness.clone(),
        pipeline.dedup().clone(),
        metrics.clone(),
        config.readiness_interval,
        (config.publish_deadline * 2).max(std::time::Duration::from_secs(1)),
        stopping.clone(),
    ));

    let addr = listeners
        .callback_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let admin_addr = listeners
        .admin_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (librdkafka, features) = sink::librdkafka_build();
    info!(version = env!("CARGO_PKG_VERSION"), %librdkafka, %features, "starting");
    info!(
        %addr,
        %admin_addr,
        ingress = ?config.ingress,
        event_path = %config.event_path,
        topic = %config.topic,
        dlq_topic = %config.dlq_topic,
        event_types = %config.routing.members().map(|k| k.event_type()).collect::<Vec<_>>().join(","),
        raw_event_types = %raw_types(&config.routing),
        raw_topic = config.routing.raw_topic().unwrap_or_default(),
        encryption = config.encrypt_key.is_some(),
        token_check = config.verification_token.is_some(),
        "listening"
    );

    if let Some(path) = &config.kafka_properties_file_absent {
        info!(
            path = %path.display(),
            "KAFKA_PROPERTIES_FILE does not exist (the Secret has no kafka.properties key): no Kafka properties from a file"
        );
    }
    if config.ingress.webhook()
        && config.encrypt_key.is_none()
        && config.verification_token.is_none()
    {
        warn!("neither FEISHU_ENCRYPT_KEY nor FEISHU_VERIFICATION_TOKEN is set: callbacks are not authenticated");
    }

    // The long connection and the follower stop when this turns true.
    let (stop_tx, stop_rx) = watch::channel(false);
    let ticket_reader = match &tickets {
        Some(book) => Some(tickets::read(&config, book, stop_rx.clone())?),
        None => None,
    };
    if tickets.is_some() {
        snapshotters.ask_for_missing_tickets();
    }
    let follower = match follower {
        Some(f) => Some(f.spawn(stop_rx.clone())?),
        None => {
            info!("dedup follower off (BRIDGE_DEDUP_FOLLOW=false): event_ids are remembered by this process only");
            None
        }
    };
    let long_connections = longconn::start(&config, &pipeline, &metrics, &readiness, &stop_rx);

    let limits = server::Limits {
        name: "callback",
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
        drain_timeout: config.drain_timeout,
    };
    let admin_limits = server::Limits {
        name: "admin",
        max_connections: ADMIN_MAX_CONNECTIONS,
        drain_timeout: std::time::Duration::from_secs(1),
        ..limits
    };
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let admin_server = tokio::spawn(server::serve(
        listeners.admin,
        admin::router(admin),
        admin_limits,
        async move {
            let _ = admin_stopped.await;
        },
    ));
    let stop = stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stop.notify_waiters();
        let _ = stop_tx.send(true);
    };
    match listeners.callback {
        Some(listener) => {
            let app = ingress::router(std::mem::take(&mut callbacks.paths));
            server::serve(listener, app, limits, shutdown).await;
        }
        None => shutdown.await,
    }
    // The long connections drained concurrently with the HTTP server.
    for task in long_connections {
        let _ = task.await;
    }
    readiness.set_kafka(Err("the bridge is shutting down".into()));
    readiness_task.abort();
    for thread in [follower, ticket_reader].into_iter().flatten() {
        // Each notices the stop within one poll.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    let flush_timeout = config.flush_timeout;
    let queued = sink.queue_depth();
    info!(queued, "flushing the producer");
    let flushed = tokio::task::spawn_blocking(move || sink.flush(flush_timeout)).await?;
    match flushed {
        Ok(()) => info!("producer flushed; bye"),
        Err(e) => error!(error = %e, remaining = queued, "producer flush did not complete"),
    }
    let _ = admin_stop.send(());
    let _ = admin_server.await;
    Ok(())
}

/// `BRIDGE_RAW_EVENT_TYPES` as configured, for the start-up log.
fn raw_types(routing: &routing::Routing) -> String {
    match routing.raw() {
        None => String::new(),
        Some(RawRoute {
            types: RawTypes::AllOthers,
            ..
        }) => "*".into(),
        Some(RawRoute {
            types: RawTypes::Listed(types),
            ..
        }) => types
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Asks Kafka whether the routed topics can be written, and publishes the
/// answer (with its reason) as readiness. Records that wait for their
/// acknowledgement longer than twice the publish deadline count as "cannot
/// be written": Feishu is being answered 503 meanwhile. Whether every
/// partition can commit holds or releases claims ([`fence`]).
async fn watch_readiness(
    sink: Sink,
    readiness: Arc<Readiness>,
    dedup: Dedup,
    metrics: Metrics,
    interval: std::time::Duration,
    stall: std::time::Duration,
    stopping: Arc<Notify>,
) {
    // A reason that changes (a stall's seconds) is logged again at most
    // this often; a change between ready and not ready at once.
    const RELOG: std::time::Duration = std::time::Duration::from_secs(30);
    let mut was: Option<Result<(), String>> = None;
    let mut logged = std::time::Instant::now();
    // Asked apart from the rounds below: a broker that does not answer
    // DescribeConfigs must not slow readiness down.
    let asking = sink.clone();
    let _min_insync = AbortOnDrop(tokio::spawn(async move { asking.watch_min_insync().await }));
    loop {
        let s = sink.clone();
        let answer = tokio::task::spawn_blocking(move || {
            s.writable(interval.max(std::time::Duration::from_secs(1)), stall)
        })
        .await;
        let state = match answer {
            Ok(answer) => {
                fence::observe(&dedup, answer.commits.as_ref(), &metrics);
                answer.ready
            }
            Err(e) => Err(format!("the readiness check failed: {e}")),
        };
        readiness.set_kafka(state.clone());
        metrics.ready.set(readiness.is_ready() as i64);
        let flipped = was.as_ref().map(Result::is_ok) != Some(state.is_ok());
        if flipped || (was.as_ref() != Some(&state) && logged.elapsed() >= RELOG) {
            logged = std::time::Instant::now();
            match &state {
                Ok(()) => info!("ready: kafka takes the bridge's records"),
                Err(why) => {
                    warn!(reason = %why, "not ready: kafka cannot take the bridge's records")
                }
            }
        }
        was = Some(state);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.notified() => return,
        }
    }
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Replaces the default panic hook (which prints the panic message to
/// stderr) with one that logs where the panic happened and only a *literal*
/// message: a formatted message may carry runtime data, such as a decrypted
/// payload, and logs must never. Nothing reachable from input is known to
/// panic; this is for the day something does.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("[formatted panic message withheld: it may contain request data]");
        error!(%location, panic = message, "panicked");
    }));
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The snapshotter, when the app's credentials are configured.
pub fn snapshotter(
    config: &Config,
    sink: &Sink,
    metrics: &Metrics,
) -> anyhow::Result<Option<snapshot::Snapshotter>> {
    let Some(client) = config.openapi.client.clone() else {
        return Ok(None);
    };
    let app_id = client.app_id.clone();
    let api = openapi::OpenApi::new(client, openapi::OpenApiMetrics::new(metrics))
        .map_err(|e| anyhow::anyhow!("cannot create the OpenAPI client: {e}"))?;
    Ok(Some(snapshot::Snapshotter::new(
        Arc::new(api),
        sink.clone(),
        snapshot::SnapshotMetrics::new(metrics),
        app_id,
    )))
}
