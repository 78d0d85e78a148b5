//! The Kafka side: one shared idempotent producer, keyed records, answers
//! only after the broker's acknowledgement, and typed delivery errors.

mod client_config;
mod health;
mod min_insync;
mod topics;

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::{error, info};

use crate::config::Config;
use crate::metrics::Metrics;
use prometheus::{Histogram, IntCounterVec};

pub use crate::destination::Destination;
pub use crate::publish_error::PublishError;
pub use client_config::{client_config, reader_config};
pub use health::{ClientError, KafkaHealth, Observer, Principal};
use min_insync::MinInsync;

/// Readiness's answer from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writable {
    /// `Ok` when the bridge can write; else why not, for an operator.
    pub ready: Result<(), String>,
    /// Whether every partition of the written topics can commit records
    /// (`Err`: which cannot); `None` when metadata did not answer.
    pub commits: Option<Result<(), String>>,
}

/// A message ready to be produced.
#[derive(Debug)]
pub struct Outgoing {
    pub destination: Destination,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The producer, its client context reporting to [`KafkaHealth`].
type BridgeProducer = FutureProducer<Observer>;

#[derive(Clone)]
pub struct Sink {
    /// Replaced as a whole when librdkafka declares it fatally failed.
    producer: Arc<RwLock<BridgeProducer>>,
    config: Arc<ClientConfig>,
    metadata: Arc<BaseConsumer<Observer>>,
    min_insync: Arc<MinInsync>,
    health: Arc<KafkaHealth>,
    /// Whether the producer itself has learnt both topics' partitions.
    warmed: Arc<AtomicBool>,
    topic: String,
    dlq_topic: String,
    /// Set exactly when raw routing is on.
    raw_topic: Option<String>,
    internal_topic: Option<String>,
    metrics: Metrics,
}

/// The SASL mechanism, user and security protocol the properties name.
fn principal_of(config: &Config) -> Principal {
    let get = |key: &str| {
        config
            .kafka_properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.expose().to_owned())
    };
    Principal {
        mechanism: get("sasl.mechanism").or_else(|| get("sasl.mechanisms")),
        user: get("sasl.username"),
        protocol: get("security.protocol"),
    }
}

impl Sink {
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, KafkaError> {
        let raw_topic = config.routing.raw_topic().map(str::to_owned);
        let health = KafkaHealth::new(
            principal_of(config),
            [
                Some(config.topic.clone()),
                Some(config.dlq_topic.clone()),
                raw_topic.clone(),
                config.internal_topic.clone(),
            ],
        );
        let producer_config = client_config(config);
        let producer: BridgeProducer = producer_config.create_with_context(Observer {
            health: health.clone(),
            client: "producer",
        })?;
        // Readiness asks for metadata through its own connections, not the
        // producer's: with one produce request in flight per connection, a
        // metadata request there would hold every produce behind it for a
        // round trip (measured with the mock cluster at 800 ms per round
        // trip: readiness checks every 200 ms kept all but one of five
        // events of a chat waiting past the 5 s drain).
        let metadata: BaseConsumer<Observer> =
            reader_config(config, "feishu-kafka-bridge-readiness").create_with_context(
                Observer {
                    health: health.clone(),
                    client: "readiness",
                },
            )?;
        let min_insync = MinInsync::new(
            &reader_config(config, "feishu-kafka-bridge-admin"),
            Observer {
                health: health.clone(),
                client: "admin",
            },
        )?;
        Ok(Sink {
            producer: Arc::new(RwLock::new(producer)),
            config: Arc::new(producer_config),
            metadata: Arc::new(metadata),
            min_insync: Arc::new(min_insync),
            health,
            warmed: Arc::new(AtomicBool::new(false)),
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            raw_topic,
            internal_topic: config.internal_topic.clone(),
            metrics,
        })
    }

    /// The producer in use; a fatally failed one is replaced first.
    fn producer(&self) -> BridgeProducer {
        let current = self
            .producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !self.health.take_fatal_check() {
            return current;
        }
        match current.client().fatal_error() {
            None => current,
            Some((code, reason)) => {
                error!(%code, %reason, "librdkafka declared the producer fatally failed: replacing it");
                self.replace_producer(&format!("{code}: {reason}"));
                self.producer
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            }
        }
    }

    /// After a fatal error librdkafka fails every record the producer
    /// holds and refuses new ones: its idempotence state (producer id,
    /// sequence numbers) can no longer be trusted. The records it held are
    /// answered 503 and Feishu delivers them again, through the new
    /// producer; one that had been written before the error is on its
    /// topic already, and the dedup follower, which reads the topics,
    /// answers its retry as a duplicate.
    fn replace_producer(&self, reason: &str) {
        let fresh: Result<BridgeProducer, KafkaError> = self.config.create_with_context(Observer {
            health: self.health.clone(),
            client: "producer",
        });
        match fresh {
            Ok(fresh) => {
                *self.producer.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                self.warmed.store(false, Ordering::Relaxed);
                self.metrics.producer_replaced.inc();
                info!(%reason, "replaced the Kafka producer after its fatal error");
            }
            Err(e) => {
                error!(error = %e, %reason, "cannot create a new Kafka producer after a fatal error; the next record tries again")
            }
        }
    }

    /// What the Kafka clients have learnt about the cluster.
    pub fn health(&self) -> &KafkaHealth {
        &self.health
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
            (Destination::Internal, _) => match &self.internal_topic {
                Some(internal) => internal,
                None => return Err(PublishError::Client("no internal topic configured".into())),
            },
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
        match self.producer().send_result(record) {
            Ok(future) => {
                self.health.enqueued();
                Ok(Delivery {
                    future,
                    started: Instant::now(),
                    pending: Pending {
                        health: self.health.clone(),
                        destination: msg.destination,
                        settled: false,
                    },
                    publish_duration: self.metrics.publish_duration_of(msg.destination),
                    delivery_errors: self.metrics.delivery_errors.clone(),
                })
            }
            Err((err, _)) => {
                let err = PublishError::from_kafka(&err);
                self.health.refused(msg.destination, &err);
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
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight_count()
    }

    /// Every topic the bridge may write: the member topic, the dead-letter
    /// topic, and the raw topic when raw routing is on, with their roles. A
    /// missing one must hold readiness back: found only when the first
    /// event needs it, it would be a 503 for that event and every retry of it.
    pub fn required_topics(&self) -> Vec<(&'static str, &str)> {
        let raw = self.raw_topic.as_deref().filter(|raw| *raw != self.topic);
        let mut topics = vec![
            (Destination::Record.role(), self.topic.as_str()),
            (Destination::DeadLetter.role(), self.dlq_topic.as_str()),
        ];
        topics.extend(raw.map(|raw| (Destination::Raw.role(), raw)));
        topics.extend(
            self.internal_topic
                .as_deref()
                .map(|t| (Destination::Internal.role(), t)),
        );
        topics
    }

    /// Keeps asking the cluster for the written topics'
    /// `min.insync.replicas` (every few minutes); never returns.
    pub async fn watch_min_insync(&self) {
        let topics = self.required_topics();
        let names: Vec<&str> = topics.iter().map(|(_, t)| *t).collect();
        self.min_insync.watch(&names).await;
    }

    /// Whether the bridge can write: ready when Kafka answers metadata with
    /// a leader for every partition of every routed topic, enough replicas
    /// in sync to commit, no write was denied since the last acknowledged
    /// one, and records do not wait longer than `stall` for an
    /// acknowledgement; otherwise why not, in words an operator can act on.
    /// Blocking: call from a blocking thread.
    pub fn writable(&self, timeout: Duration, stall: Duration) -> Writable {
        let topics = self.required_topics();
        let answer = if !self.warmed.load(Ordering::Relaxed) {
            // Until the first success, ask through the producer: the answer
            // fills its metadata cache, so the first event does not wait for
            // the producer to look up the topic (several round trips to a
            // slow broker).
            let producer = self.producer();
            let answer = topics::check(producer.client(), &topics, timeout);
            if answer.problems.is_empty() {
                self.warmed.store(true, Ordering::Relaxed);
            }
            answer
        } else {
            let answer = topics::check(self.metadata.client(), &topics, timeout);
            if !answer.problems.is_empty() {
                // Ask through the producer again until the topics are back:
                // its own view of a topic (denied, missing) is refreshed
                // by that answer, not by the readiness client's.
                self.warmed.store(false, Ordering::Relaxed);
            }
            answer
        };
        let min_insync = self.min_insync.known();
        Writable {
            ready: topics::verdict(&answer, &min_insync, &self.health, stall),
            commits: topics::commits(&answer, &min_insync, &self.health),
        }
    }

    /// Waits for every queued message to be acknowledged or to fail. Blocking.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .flush(Timeout::After(timeout))
    }

    /// Makes librdkafka raise a fatal error in the producer, as a broken
    /// idempotence state would (for tests of the replacement).
    #[doc(hidden)]
    pub fn inject_fatal_error(&self) {
        let producer = self.producer.read().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the client pointer is valid while `producer` is held; the
        // reason is a NUL-terminated literal.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"injected by a test".as_ptr(),
            );
        }
    }
}

/// A message on its way to Kafka.
pub struct Delivery {
    future: DeliveryFuture,
    started: Instant,
    pending: Pending,
    /// Resolved when enqueued: a clone of two handles, not of every metric.
    publish_duration: Histogram,
    delivery_errors: IntCounterVec,
}

impl Delivery {
    /// Resolves when Kafka acknowledged the message or librdkafka gave up on it.
    pub async fn acked(mut self) -> Result<(), PublishError> {
        let result = match self.future.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((err, _))) => Err(PublishError::from_kafka(&err)),
            Err(_) => Err(PublishError::Canceled),
        };
        self.pending
            .settle(result.as_ref().map(|_| ()).map_err(Some));
        match &result {
            Ok(()) => self
                .publish_duration
                .observe(self.started.elapsed().as_secs_f64()),
            Err(e) => self.delivery_errors.with_label_values(&[e.kind()]).inc(),
        }
        result
    }
}

/// A record counted as waiting in [`KafkaHealth`] until its delivery ends,
/// or until nobody waits for it any more.
struct Pending {
    health: Arc<KafkaHealth>,
    destination: Destination,
    settled: bool,
}

impl Pending {
    fn settle(&mut self, outcome: Result<(), Option<&PublishError>>) {
        if !self.settled {
            self.settled = true;
            self.health.settled(self.destination, outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.settle(Err(None));
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

    /// A producer that librdkafka declared fatally failed is replaced: the
    /// record it held fails (Feishu's retry), the next one is acknowledged
    /// through the new producer, and the process goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_error_replaces_the_producer_and_the_next_record_is_acknowledged() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("m", 1, 1).unwrap();
        cluster.create_topic("m.dlq", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let mut config = crate::config::validate_args(&["--topic", "m"]).unwrap();
        config.brokers = brokers;
        let metrics = Metrics::new();
        let sink = Sink::new(&config, metrics.clone()).unwrap();
        let record = |id: &str| Outgoing {
            destination: Destination::Record,
            key: Some("oc_1".into()),
            payload: id.as_bytes().to_vec(),
            headers: vec![("event_id", id.to_owned())],
        };
        sink.enqueue(&record("before"))
            .unwrap()
            .acked()
            .await
            .unwrap();

        sink.inject_fatal_error();
        // librdkafka reports the fatal error from its own thread.
        let give_up = Instant::now() + Duration::from_secs(10);
        while !sink.health.check_fatal.load(Ordering::Acquire) {
            assert!(Instant::now() < give_up, "no fatal error reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = sink.enqueue(&record("after")).unwrap().acked().await;
        assert_eq!(after.map_err(|e| e.kind()), Ok(()));
        assert_eq!(metrics.producer_replaced.get(), 1);
        assert!(sink
            .writable(Duration::from_secs(5), Duration::from_secs(5))
            .ready
            .is_ok());
    }

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
}
