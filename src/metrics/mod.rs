//! Prometheus metrics. Names and labels are a public interface (docs/operations.md,
//! dashboards and alerts depend on them): change them only with a changelog.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::{Configured, Matched, Slot};

mod follower;
mod hot;
mod reload;
pub use follower::{learned, FollowerMetrics};
use hot::Hot;
pub use reload::{reload_outcome, ReloadMetrics};
use std::sync::Arc;

/// Latency buckets in seconds, dense around Feishu's 3 s deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0,
];

/// Every value of the `outcome` label except `rejected_*`, which carries a
/// [`crate::protocol::Rejection::label`] or one of the ingress rejections.
pub mod outcome {
    pub const PUBLISHED: &str = "published";
    pub const DUPLICATE: &str = "duplicate";
    pub const CHALLENGE: &str = "challenge";
    pub const IGNORED: &str = "ignored";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub const PUBLISH_FAILED: &str = "publish_failed";
}

/// Every reason of a `rejected_<reason>` outcome: the protocol's
/// [`crate::protocol::Rejection::label`]s and the ingresses' own (body too
/// large, not received in time, unreadable). Their series exist from
/// start-up, so that the authentication-failure alert's `increase()` sees
/// the very first rejection (a series born at 1 has no increase).
pub const REJECTION_REASONS: [&str; 13] = [
    "malformed_json",
    "bad_base64",
    "undecryptable",
    "encrypted_without_key",
    "plaintext_with_key",
    "unknown_envelope",
    "missing_signature",
    "bad_signature",
    "stale_timestamp",
    "wrong_token",
    "body_too_large",
    "body_timeout",
    "body_read",
];

/// The `outcome` values of `events_total`.
pub const EVENT_OUTCOMES: [&str; 4] = [
    outcome::PUBLISHED,
    outcome::DUPLICATE,
    outcome::DEAD_LETTERED,
    outcome::PUBLISH_FAILED,
];

/// The `event_type` label: anything that does not look like a Feishu event
/// type is folded into `other`, so that input cannot blow up the number
/// of series.
fn type_label(event_type: &str) -> &str {
    let sane = !event_type.is_empty()
        && event_type.len() <= 64
        && event_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if sane {
        event_type
    } else {
        "other"
    }
}

/// Where an event came in: the `ingress` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// HTTP callbacks (`BRIDGE_EVENT_PATH`).
    Webhook,
    /// Feishu's WebSocket long connection.
    LongConnection,
}

impl Ingress {
    pub const ALL: [Ingress; 2] = [Ingress::Webhook, Ingress::LongConnection];

    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Webhook => "webhook",
            Ingress::LongConnection => "long_connection",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub events: IntCounterVec,
    pub ignored_events: IntCounterVec,
    pub request_duration: HistogramVec,
    pub publish_duration: HistogramVec,
    pub in_flight_requests: IntGauge,
    pub dedup_entries: IntGauge,
    pub producer_queue: IntGauge,
    pub delivery_errors: IntCounterVec,
    pub producer_replaced: IntCounter,
    pub ready: IntGauge,
    pub build_info: IntGaugeVec,
    pub long_connection: LongConnectionMetrics,
    pub follower: FollowerMetrics,
    pub secret_matched: SecretMatchedMetrics,
    pub secret_reload: ReloadMetrics,
    hot: Arc<Hot>,
}

/// `secret_matched_total{secret, slot}`: which configured value of each
/// webhook secret accepted requests matched, so that an operator sees when
/// nothing uses the previous one any more. One counter per series, resolved
/// here once: counting is an increment, no label lookup. Registered (at 0)
/// only for the values configured, by [`Metrics::register_secret_slots`].
#[derive(Clone)]
pub struct SecretMatchedMetrics {
    /// Indexed by [`Slot`].
    encrypt_key: [IntCounter; 2],
    verification_token: [IntCounter; 2],
}

/// Values of `secret_matched_total`'s `secret` label.
pub mod secret {
    pub const ENCRYPT_KEY: &str = "encrypt_key";
    pub const VERIFICATION_TOKEN: &str = "verification_token";
}

impl SecretMatchedMetrics {
    fn new() -> Self {
        let counter = |secret: &str, slot: Slot| {
            IntCounter::with_opts(
                Opts::new(
                    "secret_matched_total",
                    "Accepted callback requests by the configured value of each secret they matched (slot current or previous)",
                )
                .const_label("secret", secret)
                .const_label("slot", slot.as_str()),
            )
            .expect("metric")
        };
        SecretMatchedMetrics {
            encrypt_key: [Slot::Current, Slot::Previous].map(|s| counter(secret::ENCRYPT_KEY, s)),
            verification_token: [Slot::Current, Slot::Previous]
                .map(|s| counter(secret::VERIFICATION_TOKEN, s)),
        }
    }

    /// Counts an accepted request.
    pub fn count(&self, matched: Matched) {
        if let Some(slot) = matched.encrypt_key {
            self.encrypt_key[slot as usize].inc();
        }
        if let Some(slot) = matched.verification_token {
            self.verification_token[slot as usize].inc();
        }
    }
}

/// The long connection's own series (`long_connection_*`).
#[derive(Clone)]
pub struct LongConnectionMetrics {
    pub enabled: IntGauge,
    pub connected: IntGauge,
    /// Listed apps' own connections, by app name.
    pub app_connected: IntGaugeVec,
    pub reconnects: IntCounterVec,
    pub frames: IntCounterVec,
    pub fragments_dropped: IntCounterVec,
    pub ack_duration: Histogram,
}

/// Reasons of `long_connection_reconnects_total`.
pub mod reconnect {
    /// No frame arrived within the pong timeout after a ping.
    pub const PING_TIMEOUT: &str = "ping_timeout";
    /// Feishu closed the WebSocket (close frame or end of stream).
    pub const CLOSED: &str = "closed";
    /// Reading from or writing to the socket failed.
    pub const IO_ERROR: &str = "io_error";
    /// Endpoint discovery or the WebSocket handshake failed (retryable).
    pub const CONNECT_FAILED: &str = "connect_failed";
    pub const ALL: [&str; 4] = [PING_TIMEOUT, CLOSED, IO_ERROR, CONNECT_FAILED];
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("feishu_bridge".into()), None)
            .expect("static prefix is a valid metric name");
        // The constructors below only fail on malformed static names, which
        // the unit test `metrics_render` exercises; a panic here can only
        // happen at start-up, never because of input.
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Event deliveries (callback requests, long-connection events) by ingress and outcome",
            ),
            &["ingress", "outcome"],
        )
        .expect("metric");
        let events = IntCounterVec::new(
            Opts::new(
                "events_total",
                "Routed events (member and raw) by ingress, event type and outcome",
            ),
            &["ingress", "event_type", "outcome"],
        )
        .expect("metric");
        let ignored_events = IntCounterVec::new(
            Opts::new(
                "ignored_events_total",
                "Authentic events of other types, acknowledged but not published",
            ),
            &["ingress", "event_type"],
        )
        .expect("metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from receiving an event to answering it, all outcomes",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["ingress"],
        )
        .expect("metric");
        let publish_duration = HistogramVec::new(
            HistogramOpts::new(
                "publish_duration_seconds",
                "Time from enqueue to Kafka's acknowledgement",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["destination"],
        )
        .expect("metric");
        let in_flight_requests = IntGauge::new(
            "in_flight_requests",
            "Event callback requests being processed",
        )
        .expect("metric");
        let dedup_entries = IntGauge::new(
            "dedup_entries",
            "event_ids remembered (published or in flight)",
        )
        .expect("metric");
        let producer_queue = IntGauge::new(
            "producer_queue_messages",
            "Messages in the producer's queue not yet acknowledged by Kafka",
        )
        .expect("metric");
        let delivery_errors = IntCounterVec::new(
            Opts::new(
                "kafka_delivery_errors_total",
                "Failed Kafka deliveries by error class",
            ),
            &["kind"],
        )
        .expect("metric");
        let producer_replaced = IntCounter::new(
            "kafka_producer_replaced_total",
            "Kafka producers replaced after librdkafka declared them fatally failed",
        )
        .expect("metric");
        let ready =
            IntGauge::new("ready", "1 while ready to take events (see /readyz)").expect("metric");
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Always 1; labelled with the version"),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let long_connection = LongConnectionMetrics {
            enabled: IntGauge::new(
                "long_connection_enabled",
                "1 when the long connection is an ingress (BRIDGE_INGRESS)",
            )
            .expect("metric"),
            connected: IntGauge::new(
                "long_connection_connected",
                "1 while the long connection to Feishu is established",
            )
            .expect("metric"),
            app_connected: IntGaugeVec::new(
                Opts::new(
                    "long_connection_app_connected",
                    "1 while a listed app's own long connection (BRIDGE_APPS_FILE) is established",
                ),
                &["app"],
            )
            .expect("metric"),
            reconnects: IntCounterVec::new(
                Opts::new(
                    "long_connection_reconnects_total",
                    "Long-connection reconnects by the reason the previous attempt or connection ended",
                ),
                &["reason"],
            )
            .expect("metric"),
            frames: IntCounterVec::new(
                Opts::new(
                    "long_connection_frames_total",
                    "Frames received on the long connection by type",
                ),
                &["type"],
            )
            .expect("metric"),
            fragments_dropped: IntCounterVec::new(
                Opts::new(
                    "long_connection_fragments_dropped_total",
                    "Fragmented events given up on, by reason",
                ),
                &["reason"],
            )
            .expect("metric"),
            ack_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "long_connection_ack_duration_seconds",
                    "Time from an event's last fragment to its ack being handed to the socket",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("metric"),
        };

        let secret_matched = SecretMatchedMetrics::new();

        let follower = FollowerMetrics::new();
        let secret_reload = ReloadMetrics::new();

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(ignored_events.clone()),
            Box::new(request_duration.clone()),
            Box::new(publish_duration.clone()),
            Box::new(in_flight_requests.clone()),
            Box::new(dedup_entries.clone()),
            Box::new(producer_queue.clone()),
            Box::new(delivery_errors.clone()),
            Box::new(producer_replaced.clone()),
            Box::new(ready.clone()),
            Box::new(build_info.clone()),
            Box::new(long_connection.enabled.clone()),
            Box::new(long_connection.connected.clone()),
            Box::new(long_connection.app_connected.clone()),
            Box::new(long_connection.reconnects.clone()),
            Box::new(long_connection.frames.clone()),
            Box::new(long_connection.fragments_dropped.clone()),
            Box::new(long_connection.ack_duration.clone()),
        ]
        .into_iter()
        .chain(follower.collectors())
        .chain(secret_reload.collectors())
        {
            registry.register(c).expect("metric names are unique");
        }
        // Pre-create the common series so that dashboards and `rate()` see
        // zeros instead of gaps before the first event.
        // The per-event series (every outcome but the rejections and the
        // challenge, the request and publish durations) are created here.
        let hot = Arc::new(Hot::new(&requests, &request_duration, &publish_duration));
        for ingress in Ingress::ALL {
            for reason in REJECTION_REASONS {
                requests.with_label_values(&[ingress.as_str(), &format!("rejected_{reason}")]);
            }
        }
        requests.with_label_values(&[Ingress::Webhook.as_str(), outcome::CHALLENGE]);
        for r in reconnect::ALL {
            long_connection.reconnects.with_label_values(&[r]);
        }
        for t in ["event", "card", "pong"] {
            long_connection.frames.with_label_values(&[t]);
        }
        for r in crate::longconn::fragments::DROP_REASONS {
            long_connection.fragments_dropped.with_label_values(&[r]);
        }
        for kind in crate::publish_error::PublishError::KINDS {
            delivery_errors.with_label_values(&[kind]);
        }
        Metrics {
            registry,
            requests,
            events,
            ignored_events,
            request_duration,
            publish_duration,
            in_flight_requests,
            dedup_entries,
            producer_queue,
            delivery_errors,
            producer_replaced,
            ready,
            build_info,
            long_connection,
            follower,
            secret_matched,
            secret_reload,
            hot,
        }
    }

    /// Creates the `secret_matched_total` series of the configured secrets'
    /// values, at 0: at start-up, and when reloaded secrets add a value
    /// (a series already there is left as it is).
    pub fn register_secret_slots(&self, configured: Configured) {
        let m = &self.secret_matched;
        let configured = (configured
            .encrypt_key
            .iter()
            .map(|&s| &m.encrypt_key[s as usize]))
        .chain(
            configured
                .verification_token
                .iter()
                .map(|&s| &m.verification_token[s as usize]),
        );
        for counter in configured {
            // Only `AlreadyReg` is possible: the name and labels are static
            // and consistent (see the test `metrics_render`).
            let _ = self.registry.register(Box::new(counter.clone()));
        }
    }

    pub fn count(&self, ingress: Ingress, outcome: &str) {
        match self.hot.requests(ingress, outcome) {
            Some(counter) => counter.inc(),
            None => self
                .requests
                .with_label_values(&[ingress.as_str(), outcome])
                .inc(),
        }
    }

    /// Observes one request's time to answer (`request_duration_seconds`).
    pub fn observe_request(&self, ingress: Ingress, seconds: f64) {
        self.hot.request_duration(ingress).observe(seconds);
    }

    /// The `publish_duration_seconds` series of a destination.
    pub fn publish_duration_of(&self, destination: crate::destination::Destination) -> Histogram {
        self.hot.publish_duration(destination).clone()
    }

    pub fn count_rejected(&self, ingress: Ingress, reason: &str) {
        self.requests
            .with_label_values(&[ingress.as_str(), &format!("rejected_{reason}")])
            .inc();
    }

    /// Counts an ignored event type.
    pub fn count_ignored(&self, ingress: Ingress, event_type: &str) {
        self.ignored_events
            .with_label_values(&[ingress.as_str(), type_label(event_type)])
            .inc();
        self.count(ingress, outcome::IGNORED);
    }

    /// Counts a routed event's outcome by its type.
    pub fn count_event(&self, ingress: Ingress, event_type: &str, outcome: &str) {
        self.events
            .with_label_values(&[ingress.as_str(), type_label(event_type), outcome])
            .inc();
    }

    /// Creates the `events_total` series of the types routed by name, so
    /// that dashboards see zeros before the first event of each.
    /// Registers a collector of another module (the OpenAPI client's and
    /// the snapshots' metrics keep their definitions next to their code).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        // Registered once per process; a second registration (a second
        // client in tests) keeps the first, which is what is served.
        let _ = self.registry.register(collector);
    }

    pub fn register_event_types<'a>(&self, types: impl IntoIterator<Item = &'a str>) {
        for t in types {
            for ingress in Ingress::ALL {
                for o in EVENT_OUTCOMES {
                    self.events
                        .with_label_values(&[ingress.as_str(), type_label(t), o]);
                }
            }
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
