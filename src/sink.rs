//! The Kafka side: one shared idempotent producer, keyed records, answers
//! only after the broker's acknowledgement, and typed delivery errors.

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::Config;
use crate::metrics::Metrics;
use prometheus::{Histogram, IntCounterVec};

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Member records (`KAFKA_TOPIC`).
    Record,
    DeadLetter,
    /// Raw records (`BRIDGE_RAW_TOPIC`).
    Raw,
}

impl Destination {
    pub const ALL: [Destination; 3] = [
        Destination::Record,
        Destination::DeadLetter,
        Destination::Raw,
    ];

    /// The `destination` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Destination::Record => "record",
            Destination::DeadLetter => "dead_letter",
            Destination::Raw => "raw",
        }
    }
}

/// A message ready to be produced.
#[derive(Debug)]
pub struct Outgoing {
    pub destination: Destination,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Why a message was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("kafka rejected the message ({code:?}); retrying may succeed")]
    Retriable { code: RDKafkaErrorCode },
    #[error("kafka rejected the message ({code:?}); retrying will not help until the cluster or config changes")]
    Permanent { code: RDKafkaErrorCode },
    #[error("kafka client error: {0}")]
    Client(String),
    #[error("delivery report was lost (producer shut down)")]
    Canceled,
}

impl PublishError {
    /// Every value [`PublishError::kind`] returns: the `kind` label of
    /// `feishu_bridge_kafka_delivery_errors_total`.
    pub const KINDS: [&'static str; 5] =
        ["queue_full", "retriable", "permanent", "client", "canceled"];

    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "queue_full",
            PublishError::Retriable { .. } => "retriable",
            PublishError::Permanent { .. } => "permanent",
            PublishError::Client(_) => "client",
            PublishError::Canceled => "canceled",
        }
    }

    fn from_kafka(err: &KafkaError) -> Self {
        match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
            Some(code) if is_retriable(code) => PublishError::Retriable { code },
            Some(code) => PublishError::Permanent { code },
            None => PublishError::Client(err.to_string()),
        }
    }
}

/// Errors after which the same message may well succeed later (the broker
/// recovers, a leader is elected): Feishu's retry is the right remedy.
fn is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageTimedOut
            | RequestTimedOut
            | BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | LeaderNotAvailable
            | NotLeaderForPartition
            | NetworkException
            | UnknownTopicOrPartition
            | PurgeQueue
            | PurgeInflight
            | OutOfOrderSequenceNumber
            | KafkaStorageError
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | OffsetNotAvailable
            | PreferredLeaderNotAvailable
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | WaitCache
            | Retry
    )
}

/// The client configuration the bridge needs: guarantees first, then the
/// user's pass-through properties (already checked for conflicts).
pub fn client_config(config: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Same partition for a key as the Java client's default partitioner.
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        // Batching that follows the load (group commit): no timer, and one
        // produce request in flight per broker. A lone record leaves at once;
        // while a request is out, records queue and the next request carries
        // all of them. Measured against every fixed linger
        // (docs/benchmarks.md): faster at concurrency 1 than linger 0 and at the peak
        // than linger 2. One request in flight also keeps the idempotent
        // producer's order trivially.
        .set("linger.ms", "0")
        .set("max.in.flight.requests.per.connection", "1")
        // librdkafka's default of 1 GiB would outgrow any sensible pod
        // limit while a broker is stalled; past this the bridge answers 503.
        .set("queue.buffering.max.kbytes", "65536")
        .set("client.id", "feishu-kafka-bridge");
    for (k, v) in &config.kafka_properties {
        cc.set(k, v.expose());
    }
    cc
}

/// Producer-only librdkafka properties: passing them to a consumer only
/// earns a warning, so readers leave them out of `KAFKA_PROPERTIES`.
const PRODUCER_ONLY: &[&str] = &[
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.backpressure.threshold",
    "batch.num.messages",
    "batch.size",
    "compression.type",
    "compression.codec",
    "compression.level",
    "message.send.max.retries",
    "retries",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "request.timeout.ms",
    "sticky.partitioning.linger.ms",
    "queuing.strategy",
    "delivery.report.only.error",
    "enable.gapless.guarantee",
    "transaction.timeout.ms",
];

/// A client that reads from Kafka (the dedup follower, readiness): the same
/// brokers and security settings as the producer, without the producer-only
/// properties of `KAFKA_PROPERTIES`.
pub fn reader_config(config: &Config, client_id: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id);
    for (k, v) in &config.kafka_properties {
        if !PRODUCER_ONLY.contains(&k.as_str()) {
            cc.set(k, v.expose());
        }
    }
    cc
}

#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer,
    metadata: Arc<BaseConsumer>,
    /// Whether the producer itself has learnt both topics' partitions.
    warmed: Arc<AtomicBool>,
    topic: String,
    dlq_topic: String,
    /// Set exactly when raw routing is on.
    raw_topic: Option<String>,
    metrics: Metrics,
}

impl Sink {
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, KafkaError> {
        let producer: FutureProducer = client_config(config).create()?;
        // Readiness asks for metadata through its own connections, not the
        // producer's: with one produce request in flight per connection, a
        // metadata request there would hold every produce behind it for a
        // round trip (measured with the mock cluster at 800 ms per round
        // trip: readiness checks every 200 ms kept all but one of five
        // events of a chat waiting past the 5 s drain).
        let metadata: BaseConsumer =
            reader_config(config, "feishu-kafka-bridge-readiness").create()?;
        Ok(Sink {
            producer,
            metadata: Arc::new(metadata),
            warmed: Arc::new(AtomicBool::new(false)),
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            raw_topic: config.routing.raw_topic().map(str::to_owned),
            metrics,
        })
    }

    /// Puts the message on the producer's queue. Fails at once when the
    /// queue is full; otherwise returns a handle that resolves on the ack.
    pub fn enqueue(&self, msg: &Outgoing) -> Result<Delivery, PublishError> {
        let topic = match (msg.destination, &self.raw_topic) {
            (Destination::Record, _) => &self.topic,
            (Destination::DeadLetter, _) => &self.dlq_topic,
            (Destination::Raw, Some(raw)) => raw,
            // Only raw routing builds raw messages, and it comes with its topic.
            (Destination::Raw, None) => {
                return Err(PublishError::Client("no raw topic configured".into()))
            }
        };
        let mut headers = OwnedHeaders::new_with_capacity(msg.headers.len());
        for (k, v) in &msg.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .payload(&msg.payload)
            .headers(headers);
        if let Some(key) = &msg.key {
            record = record.key(key.as_bytes());
        }
        match self.producer.send_result(record) {
            Ok(future) => Ok(Delivery {
                future,
                started: Instant::now(),
                publish_duration: self.metrics.publish_duration_of(msg.destination),
                delivery_errors: self.metrics.delivery_errors.clone(),
            }),
            Err((err, _)) => {
                let err = PublishError::from_kafka(&err);
                self.metrics
                    .delivery_errors
                    .with_label_values(&[err.kind()])
                    .inc();
                Err(err)
            }
        }
    }

    /// Messages handed to librdkafka and not yet acknowledged or failed.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Every topic the bridge may write: the member topic, the dead-letter
    /// topic, and the raw topic when raw routing is on. A missing one must
    /// hold readiness back: found only when the first event needs it, it
    /// would be a 503 for that event and every retry of it.
    pub fn required_topics(&self) -> impl Iterator<Item = &str> {
        let raw = self.raw_topic.as_deref().filter(|raw| *raw != self.topic);
        [self.topic.as_str(), self.dlq_topic.as_str()]
            .into_iter()
            .chain(raw)
    }

    /// Asks the cluster for the routed topics' metadata; true when every
    /// partition of each has a leader. Blocking: call from a blocking thread.
    pub fn topic_available(&self, timeout: Duration) -> bool {
        if !self.warmed.load(Ordering::Relaxed) {
            // Until the first success, ask through the producer: the answer
            // fills its metadata cache, so the first event does not wait for
            // the producer to look up the topic (several round trips to a
            // slow broker).
            let client = self.producer.client();
            let ok = self
                .required_topics()
                .all(|t| topic_ready(client.fetch_metadata(Some(t), timeout), t));
            if ok {
                self.warmed.store(true, Ordering::Relaxed);
            }
            return ok;
        }
        self.required_topics()
            .all(|t| topic_ready(self.metadata.fetch_metadata(Some(t), timeout), t))
    }

    /// Waits for every queued message to be acknowledged or to fail. Blocking.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}

/// Whether a metadata answer has `topic` with a leader for every partition.
fn topic_ready(answer: Result<rdkafka::metadata::Metadata, KafkaError>, topic: &str) -> bool {
    match answer {
        Ok(md) => md.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && !t.partitions().is_empty()
                && t.partitions()
                    .iter()
                    .all(|p| p.leader() >= 0 && p.error().is_none())
        }),
        Err(_) => false,
    }
}

/// A message on its way to Kafka.
pub struct Delivery {
    future: DeliveryFuture,
    started: Instant,
    /// Resolved when enqueued: a clone of two handles, not of every metric.
    publish_duration: Histogram,
    delivery_errors: IntCounterVec,
}

impl Delivery {
    /// Resolves when Kafka acknowledged the message or librdkafka gave up on it.
    pub async fn acked(self) -> Result<(), PublishError> {
        let result = match self.future.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((err, _))) => Err(PublishError::from_kafka(&err)),
            Err(_) => Err(PublishError::Canceled),
        };
        match &result {
            Ok(()) => self
                .publish_duration
                .observe(self.started.elapsed().as_secs_f64()),
            Err(e) => self.delivery_errors.with_label_values(&[e.kind()]).inc(),
        }
        result
    }
}

/// librdkafka's version and compiled-in features, for the start-up log.
pub fn librdkafka_build() -> (String, String) {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_default();
    (version, features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_with_tls_sasl_and_compression() {
        let (_, features) = librdkafka_build();
        for f in ["ssl", "sasl_plain", "sasl_scram", "lz4", "gzip"] {
            assert!(
                features.split(',').any(|x| x == f),
                "librdkafka lacks {f}: {features}"
            );
        }
    }

    #[test]
    fn kinds_list_every_kind() {
        let all = [
            PublishError::QueueFull,
            PublishError::Retriable {
                code: RDKafkaErrorCode::MessageTimedOut,
            },
            PublishError::Permanent {
                code: RDKafkaErrorCode::MessageSizeTooLarge,
            },
            PublishError::Client(String::new()),
            PublishError::Canceled,
        ];
        assert_eq!(all.map(|e| e.kind()), PublishError::KINDS);
    }

    #[test]
    fn queue_full_and_timeouts_are_retriable_size_is_permanent() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(PublishError::from_kafka(&e).kind(), "queue_full");
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(PublishError::from_kafka(&e).kind(), "retriable");
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(PublishError::from_kafka(&e).kind(), "permanent");
    }
}
