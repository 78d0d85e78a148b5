//! Long-connection ingress: the bridge dials Feishu over a WebSocket and
//! receives events on it, so no public endpoint, certificate or callback
//! URL is needed. Events go through the same [`Pipeline`] as callbacks (same
//! deduplication, record and Kafka semantics) and each event frame is
//! acknowledged only once its outcome is known: `{"code":200}` after Kafka's
//! ack (or for a remembered duplicate, an ignored type, a dead letter),
//! `{"code":500}` when the record could not be written, so Feishu pushes the
//! event again.
//!
//! Protocol (the official SDKs' ws clients):
//! `POST {domain}/callback/ws/endpoint` hands out a one-time `wss://` URL and
//! a [`ClientConfig`]; frames are protobuf [`frame::Frame`]s; the client pings
//! every `PingInterval` and the server's pong may carry a new config.
//!
//! What the SDKs lack and this adds: a dead connection is noticed (no frame
//! within `pong_timeout` of a ping means the socket is half-open, and it is
//! replaced), fatal refusals stop the retries with a clear log line instead
//! of looping, acks wait for Kafka, and shutdown finishes in-flight events
//! and closes the socket with a close frame.

pub mod endpoint;
mod event_job;
pub mod fragments;
pub mod frame;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::{Config, LongConnectionConfig};
use crate::metrics::{reconnect, Ingress, Metrics};
use crate::order::{ChatLines, Turn};
use crate::pipeline::Pipeline;
use crate::protocol;
use crate::readiness::Readiness;
use endpoint::{ConnectError, Connected};
use event_job::EventJob;
use fragments::{Added, Fragments};
use frame::{Frame, Kind};

const VIA: Ingress = Ingress::LongConnection;

/// How long an incomplete set of fragments is kept after its latest
/// fragment (the official SDKs use the same 5 s).
const FRAGMENT_TTL: Duration = Duration::from_secs(5);

/// The connection settings Feishu hands out with the endpoint and in pongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Reconnect attempts after a failure; -1 for no limit.
    pub reconnect_count: i64,
    /// Longest wait between two failed attempts.
    pub reconnect_interval: Duration,
    /// The first reconnect waits a random time below this, so that the
    /// replicas of a deployment do not all reconnect at once.
    pub reconnect_nonce: Duration,
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    /// The SDKs' defaults, used until Feishu sends its own.
    fn default() -> Self {
        ClientConfig {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
        }
    }
}

/// `ClientConfig` as Feishu sends it: seconds, every field optional.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ConfigUpdate {
    #[serde(rename = "ReconnectCount")]
    pub reconnect_count: Option<i64>,
    #[serde(rename = "ReconnectInterval")]
    pub reconnect_interval: Option<i64>,
    #[serde(rename = "ReconnectNonce")]
    pub reconnect_nonce: Option<i64>,
    #[serde(rename = "PingInterval")]
    pub ping_interval: Option<i64>,
}

impl ClientConfig {
    /// Applies the fields present and sane; returns whether anything
    /// changed. (The SDKs overwrite all four, turning a missing field into
    /// 0; a zero ping interval would then ping in a loop.)
    pub fn apply(&mut self, u: &ConfigUpdate) -> bool {
        let before = self.clone();
        let secs = |v: i64| Duration::from_secs(v as u64);
        if let Some(n) = u.reconnect_count.filter(|n| *n >= -1) {
            self.reconnect_count = n;
        }
        if let Some(s) = u.reconnect_interval.filter(|s| *s >= 1) {
            self.reconnect_interval = secs(s);
        }
        if let Some(s) = u.reconnect_nonce.filter(|s| *s >= 0) {
            self.reconnect_nonce = secs(s);
        }
        if let Some(s) = u.ping_interval.filter(|s| *s >= 1) {
            self.ping_interval = secs(s);
        }
        *self != before
    }

    /// The wait before reconnect attempt `failures + 1`: a random share of
    /// the nonce after a connection ended, then exponential backoff from 1 s
    /// with jitter, never longer than `reconnect_interval`.
    pub fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.reconnect_nonce.mul_f64(rand::random::<f64>());
        }
        let exp = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16));
        exp.min(self.reconnect_interval)
            .mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// Everything the long connection needs from the rest of the service.
pub struct LongConnection {
    pub config: LongConnectionConfig,
    /// A listed app's name (`BRIDGE_APPS_FILE`); `None` for the single app's.
    pub app: Option<String>,
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    pub publish_deadline: Duration,
    pub body_limit: usize,
    pub drain_timeout: Duration,
}

/// Starts every long connection the configuration asks for: the single
/// app's (`BRIDGE_INGRESS`) and each listed app's own. Each ends when
/// `shutdown` turns true, after draining its in-flight events.
pub fn start(
    config: &Config,
    pipeline: &Pipeline,
    metrics: &Metrics,
    readiness: &Arc<Readiness>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let single = config.long_connection.clone().map(|lc| (None, lc));
    let listed = config
        .listed_long_connections
        .iter()
        .map(|l| (Some(l.name.clone()), l.config.clone()));
    single
        .into_iter()
        .chain(listed)
        .map(|(app, lc)| {
            match &app {
                None => {
                    info!(domain = %lc.domain, app_id = %lc.app_id, "starting the long connection");
                    metrics.long_connection.enabled.set(1);
                }
                Some(name) => {
                    info!(domain = %lc.domain, app = %name, app_id = %lc.app_id, "starting a listed app's long connection");
                    // Down until it connects: said by readiness and the gauge from now on.
                    readiness.set_listed_long_connection(name, false);
                    metrics.long_connection.app_connected.with_label_values(&[name]).set(0);
                }
            }
            tokio::spawn(
                LongConnection {
                    config: lc,
                    app,
                    pipeline: pipeline.clone(),
                    metrics: metrics.clone(),
                    readiness: readiness.clone(),
                    publish_deadline: config.publish_deadline,
                    body_limit: config.body_limit_bytes,
                    drain_timeout: config.drain_timeout,
                }
                .run(shutdown.clone()),
            )
        })
        .collect()
}

enum SessionEnd {
    Shutdown,
    Lost {
        reason: &'static str,
        detail: String,
    },
}

impl LongConnection {
    /// Connects, serves and reconnects until `shutdown` turns true or Feishu
    /// refuses for good (the error is logged; the task ends, the rest of the
    /// service keeps running, and readiness stays false in
    /// long-connection-only mode).
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        match self.app.clone() {
            // Every line it logs names the app.
            Some(app) => {
                self.serve(shutdown)
                    .instrument(info_span!("long_connection", app = %app))
                    .await
            }
            None => self.serve(shutdown).await,
        }
    }

    async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let http = match reqwest::Client::builder()
            .timeout(self.config.connect_timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                error!(ingress = VIA.as_str(), error = %e, "cannot create the HTTP client for endpoint discovery");
                return;
            }
        };
        // Feishu pushes to whichever connection is up: dialling before the
        // warm start has read the dedup memory back would only answer its
        // events `{"code":500}`.
        if !self.pipeline.dedup().is_complete() {
            info!(
                ingress = VIA.as_str(),
                "long connection: waiting for the dedup warm start before dialling"
            );
            tokio::select! {
                _ = self.pipeline.dedup().wait_complete() => {}
                _ = shutdown.changed() => return,
            }
        }
        let mut client_config = ClientConfig::default();
        let mut failures: u32 = 0;
        let mut first = true;
        loop {
            if !first {
                if client_config.reconnect_count >= 0
                    && i64::from(failures) >= client_config.reconnect_count.max(1)
                {
                    error!(
                        ingress = VIA.as_str(),
                        attempts = failures,
                        "long connection: giving up after ReconnectCount failed attempts; restart to try again"
                    );
                    return;
                }
                let wait = client_config.backoff(failures);
                debug!(
                    ingress = VIA.as_str(),
                    wait_ms = wait.as_millis() as u64,
                    "long connection: waiting before reconnecting"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
            first = false;
            if *shutdown.borrow() {
                return;
            }
            let attempt = tokio::time::timeout(
                self.config.connect_timeout,
                endpoint::connect(&http, &self.config),
            );
            let connected = tokio::select! {
                r = attempt => r.unwrap_or_else(|_| Err(ConnectError::Retryable(format!(
                    "endpoint discovery and handshake took longer than {:?}", self.config.connect_timeout)))),
                _ = shutdown.changed() => return,
            };
            match connected {
                Ok(c) => {
                    failures = 0;
                    if let Some(update) = &c.config {
                        client_config.apply(update);
                    }
                    info!(
                        ingress = VIA.as_str(),
                        device_id = %c.device_id,
                        service_id = c.service_id,
                        ping_interval_s = client_config.ping_interval.as_secs(),
                        "long connection established"
                    );
                    self.set_connected(true);
                    let end = self.session(c, &mut client_config, &mut shutdown).await;
                    self.set_connected(false);
                    match end {
                        SessionEnd::Shutdown => {
                            info!(
                                ingress = VIA.as_str(),
                                "long connection closed for shutdown"
                            );
                            return;
                        }
                        SessionEnd::Lost { reason, detail } => {
                            self.metrics
                                .long_connection
                                .reconnects
                                .with_label_values(&[reason])
                                .inc();
                            warn!(ingress = VIA.as_str(), reason, %detail, "long connection lost; reconnecting");
                        }
                    }
                }
                Err(ConnectError::Fatal(why)) => {
                    error!(
                        ingress = VIA.as_str(),
                        reason = %why,
                        "long connection refused by Feishu; not retrying (check the App ID and secret: FEISHU_APP_ID/FEISHU_APP_SECRET, or the app's entry in BRIDGE_APPS_FILE; the app's long-connection setting and its connection count), then restart"
                    );
                    return;
                }
                Err(ConnectError::Retryable(why)) => {
                    failures = failures.saturating_add(1);
                    self.metrics
                        .long_connection
                        .reconnects
                        .with_label_values(&[reconnect::CONNECT_FAILED])
                        .inc();
                    warn!(ingress = VIA.as_str(), reason = %why, attempt = failures, "long connection attempt failed; retrying");
                }
            }
        }
    }

    fn set_connected(&self, up: bool) {
        match &self.app {
            None => {
                self.readiness.set_long_connection(up);
                self.metrics.long_connection.connected.set(up as i64);
            }
            Some(app) => {
                self.readiness.set_listed_long_connection(app, up);
                self.metrics
                    .long_connection
                    .app_connected
                    .with_label_values(&[app])
                    .set(up as i64);
            }
        }
        self.metrics.ready.set(self.readiness.is_ready() as i64);
    }

    async fn session(
        &self,
        connected: Connected,
        client_config: &mut ClientConfig,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let service = connected.service_id;
        let (mut sink, mut stream) = connected.ws.split();
        // Acks come back from the event tasks through this channel, so that
        // one place writes to the socket.
        let (ack_tx, mut ack_rx) = mpsc::channel::<Vec<u8>>(1024);
        let mut tasks = JoinSet::new();
        let mut fragments = Fragments::new(FRAGMENT_TTL, self.body_limit);
        // Per-chat order of this connection's events (`crate::order`).
        let mut lines = ChatLines::default();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut next_ping = Instant::now();
        // Set when a ping goes out, cleared by any frame from Feishu.
        let mut waiting_since: Option<Instant> = None;
        let pong_timeout = self.config.pong_timeout;

        let end = loop {
            let dead_at = waiting_since.map(|t| t + pong_timeout);
            let wake = dead_at.map_or(next_ping, |d| d.min(next_ping));
            tokio::select! {
                _ = shutdown.changed() => break SessionEnd::Shutdown,
                Some(bytes) = ack_rx.recv() => {
                    if let Err(e) = sink.send(Message::Binary(bytes.into())).await {
                        break lost(reconnect::IO_ERROR, format!("writing an ack failed: {e}"));
                    }
                }
                msg = stream.next() => {
                    match msg {
                        None => break lost(reconnect::CLOSED, "the stream ended".into()),
                        Some(Err(e)) => break lost(reconnect::IO_ERROR, format!("reading failed: {e}")),
                        Some(Ok(Message::Close(c))) => break lost(
                            reconnect::CLOSED,
                            format!("Feishu closed the connection ({})", c.map(|c| c.code.to_string()).unwrap_or_else(|| "no code".into())),
                        ),
                        Some(Ok(Message::Binary(bytes))) => {
                            waiting_since = None;
                            if let Some(interval) = self.on_frame(&bytes, &mut fragments, &mut lines, &mut tasks, &ack_tx, client_config) {
                                next_ping = Instant::now() + interval;
                            }
                        }
                        Some(Ok(_)) => {
                            // WebSocket-level ping/pong or text: proof of life
                            // all the same; text frames are not part of the protocol.
                            waiting_since = None;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if dead_at.is_some_and(|d| now >= d) {
                        break lost(reconnect::PING_TIMEOUT, format!("no frame within {} ms of a ping: the connection is half-open", pong_timeout.as_millis()));
                    }
                    if now >= next_ping {
                        if let Err(e) = sink.send(Message::Binary(Frame::ping(service).to_bytes().into())).await {
                            break lost(reconnect::IO_ERROR, format!("writing a ping failed: {e}"));
                        }
                        waiting_since.get_or_insert(now);
                        next_ping = now + client_config.ping_interval;
                    }
                }
                _ = sweep.tick() => {
                    let dropped = fragments.expire(Instant::now());
                    if dropped > 0 {
                        self.metrics.long_connection.fragments_dropped.with_label_values(&["expired"]).inc_by(dropped as u64);
                        warn!(ingress = VIA.as_str(), sets = dropped, "fragmented events incomplete after 5 s dropped; Feishu pushes them again");
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        };

        match end {
            SessionEnd::Shutdown => {
                drop(ack_tx);
                info!(
                    ingress = VIA.as_str(),
                    in_flight = tasks.len(),
                    "long connection: no new frames; finishing in-flight events"
                );
                let deadline = Instant::now() + self.drain_timeout;
                let mut open = true;
                while open || !tasks.is_empty() {
                    tokio::select! {
                        ack = ack_rx.recv(), if open => match ack {
                            Some(bytes) => {
                                if sink.send(Message::Binary(bytes.into())).await.is_err() {
                                    break;
                                }
                            }
                            None => open = false,
                        },
                        Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                        _ = tokio::time::sleep_until(deadline) => {
                            warn!(ingress = VIA.as_str(), unanswered = tasks.len(), "drain timeout: events left without an ack are pushed again by Feishu");
                            break;
                        }
                    }
                }
                let close = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "shutting down".into(),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                SessionEnd::Shutdown
            }
            lost => {
                // In-flight events still settle their Kafka writes (and so
                // deduplication); their acks have no socket to go to, and
                // Feishu pushes those events again on the next connection.
                tasks.detach_all();
                lost
            }
        }
    }

    /// Handles one binary message; returns the new ping interval when a
    /// pong changed it.
    fn on_frame(
        &self,
        bytes: &[u8],
        fragments: &mut Fragments,
        lines: &mut ChatLines,
        tasks: &mut JoinSet<()>,
        ack_tx: &mpsc::Sender<Vec<u8>>,
        client_config: &mut ClientConfig,
    ) -> Option<Duration> {
        let frames = &self.metrics.long_connection.frames;
        let mut frame = match Frame::decode_bytes(bytes) {
            Ok(f) => f,
            Err(e) => {
                frames.with_label_values(&["invalid"]).inc();
                warn!(ingress = VIA.as_str(), error = %e, "ignored a message that is not a pbbp2 frame");
                return None;
            }
        };
        let kind = frame.kind();
        frames.with_label_values(&[kind.as_str()]).inc();
        match kind {
            Kind::Pong => {
                let update = frame
                    .payload
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .and_then(|p| serde_json::from_slice::<ConfigUpdate>(p).ok())?;
                let before = client_config.ping_interval;
                if client_config.apply(&update) {
                    info!(ingress = VIA.as_str(), config = ?client_config, "applied the ClientConfig from a pong");
                }
                (client_config.ping_interval != before).then_some(client_config.ping_interval)
            }
            Kind::Event => {
                let received = Instant::now();
                let payload = frame.payload.take().unwrap_or_default();
                let number = |key| frame.header(key).and_then(|v| v.parse::<usize>().ok());
                let sum = number("sum").unwrap_or(1);
                let payload = if sum <= 1 {
                    payload
                } else {
                    let seq = number("seq").unwrap_or(usize::MAX);
                    let id = frame.header("message_id").unwrap_or_default().to_owned();
                    match fragments.add(&id, sum, seq, payload, received) {
                        Added::Complete(p) => p,
                        Added::Pending => return None,
                        Added::Dropped(reason) => {
                            self.metrics
                                .long_connection
                                .fragments_dropped
                                .with_label_values(&[reason])
                                .inc();
                            warn!(ingress = VIA.as_str(), reason, message_id = %id, "dropped a fragmented event");
                            return None;
                        }
                    }
                };
                // Parsed here, in frame order, so that the event takes its
                // place in its chat's line before any later frame does.
                let parsed = if payload.len() > self.body_limit {
                    Err(None)
                } else {
                    protocol::from_long_connection(&payload).map_err(Some)
                };
                let routing = self.pipeline.routing();
                let turn = match &parsed {
                    Ok(event) => routing
                        .line_key(event)
                        .map_or_else(Turn::none, |key| lines.take(key)),
                    Err(_) => Turn::none(),
                };
                let job = EventJob {
                    frame,
                    parsed,
                    turn,
                    received,
                    deadline: received + self.publish_deadline,
                    body_limit: self.body_limit,
                    pipeline: self.pipeline.clone(),
                    metrics: self.metrics.clone(),
                    ack_tx: ack_tx.clone(),
                };
                tasks.spawn(job.run());
                None
            }
            // Cards are not this bridge's business and pings from the
            // server need no answer; the SDKs do not ack either.
            Kind::Card | Kind::Ping | Kind::Other => None,
        }
    }
}

fn lost(reason: &'static str, detail: String) -> SessionEnd {
    SessionEnd::Lost { reason, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_updates_apply_only_present_sane_fields() {
        let mut c = ClientConfig::default();
        let u: ConfigUpdate = serde_json::from_str(r#"{"PingInterval":5}"#).unwrap();
        assert!(c.apply(&u));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_interval, Duration::from_secs(120));
        let u: ConfigUpdate =
            serde_json::from_str(r#"{"PingInterval":0,"ReconnectCount":-7,"ReconnectNonce":0}"#)
                .unwrap();
        assert!(c.apply(&u));
        assert_eq!(c.ping_interval, Duration::from_secs(5));
        assert_eq!(c.reconnect_count, -1);
        assert_eq!(c.reconnect_nonce, Duration::ZERO);
        assert!(!c.apply(&u));
    }

    #[test]
    fn backoff_grows_to_the_interval_with_jitter() {
        let c = ClientConfig {
            reconnect_interval: Duration::from_secs(10),
            reconnect_nonce: Duration::from_secs(2),
            ..ClientConfig::default()
        };
        for _ in 0..100 {
            assert!(c.backoff(0) <= Duration::from_secs(2));
            let b1 = c.backoff(1);
            assert!(b1 >= Duration::from_millis(500) && b1 <= Duration::from_secs(1));
            let b9 = c.backoff(9);
            assert!(b9 >= Duration::from_secs(5) && b9 <= Duration::from_secs(10));
        }
    }
}
