//! What the bridge's Kafka clients learn about the cluster, kept so that
//! readiness can say *why* records cannot be written, not only that they
//! cannot: librdkafka reports a refused login or a failed TLS handshake as
//! a client-wide error (never on a message, never in a metadata answer), a
//! denied write only on the record, and a stall not at all until each
//! record's timeout. It also notices the one error after which a producer
//! is unusable for good (a fatal error of the idempotent producer), so that
//! the sink can replace it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{error, warn};

use crate::destination::Destination;
use crate::publish_error::PublishError;

/// A client-wide error is part of readiness's answer for this long.
const CLIENT_ERROR_RELEVANT: Duration = Duration::from_secs(120);
/// The same kind of client-wide error is logged again after this long.
const RELOG: Duration = Duration::from_secs(30);

/// A client-wide error of the kinds an operator must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The brokers refused the credentials.
    Authentication(String),
    /// The TLS handshake failed (the CA, the broker's name, the protocol).
    Tls(String),
    /// No broker could be reached.
    Transport(String),
}

/// Who the bridge is to the cluster, for messages: the SASL mechanism and
/// user name, never the password.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    pub mechanism: Option<String>,
    pub user: Option<String>,
    pub protocol: Option<String>,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = self.protocol.as_deref().unwrap_or("PLAINTEXT");
        match (&self.mechanism, &self.user) {
            (Some(m), Some(u)) => write!(f, "{protocol}, SASL mechanism {m}, user \"{u}\""),
            (Some(m), None) => write!(f, "{protocol}, SASL mechanism {m}"),
            (None, Some(u)) => write!(f, "{protocol}, user \"{u}\""),
            (None, None) => write!(f, "{protocol}"),
        }
    }
}

pub struct KafkaHealth {
    principal: Principal,
    /// The topic of each destination, for messages.
    topics: [Option<String>; 4],
    started: Instant,
    last_error: Mutex<Option<(ClientError, Instant)>>,
    /// Destinations whose last delivery was denied by an ACL.
    denied: [AtomicBool; 4],
    /// The last delivery's retriable error when no record was acknowledged
    /// since: the cluster is not taking records even while none waits.
    failing: Mutex<Option<String>>,
    is_failing: AtomicBool,
    /// Records handed to the producer and not yet settled.
    pending: AtomicI64,
    /// When (ms since `started`) a record was last acknowledged, or when
    /// records started waiting after none did.
    progress_ms: AtomicU64,
    /// Set by every client-wide error: the sink then asks the producer
    /// whether it is fatally failed (librdkafka's error event does not say
    /// so by its code: a fatal error arrives with its cause's code).
    pub(super) check_fatal: AtomicBool,
}

impl KafkaHealth {
    pub fn new(principal: Principal, topics: [Option<String>; 4]) -> Arc<Self> {
        Arc::new(KafkaHealth {
            principal,
            topics,
            started: Instant::now(),
            last_error: Mutex::new(None),
            denied: Default::default(),
            failing: Mutex::new(None),
            is_failing: AtomicBool::new(false),
            pending: AtomicI64::new(0),
            progress_ms: AtomicU64::new(0),
            check_fatal: AtomicBool::new(false),
        })
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A record was handed to the producer.
    pub fn enqueued(&self) {
        if self.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            // Nothing was waiting: the wait starts now, not at the last ack.
            self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The producer refused a record at once because the ACLs deny its
    /// topic (librdkafka knew from metadata): as a denied delivery, it
    /// names the topic in readiness until a write there is acknowledged.
    pub fn refused(&self, destination: Destination, error: &PublishError) {
        if matches!(error, PublishError::Denied { .. }) {
            self.denied[destination as usize].store(true, Ordering::Relaxed);
        }
    }

    /// A record's delivery ended: acknowledged, or failed with `error`
    /// (`None` when nobody waited for the outcome any more).
    pub fn settled(&self, destination: Destination, outcome: Result<(), Option<&PublishError>>) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        let slot = &self.denied[destination as usize];
        match outcome {
            Ok(()) => {
                self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
                slot.store(false, Ordering::Relaxed);
                // The lock only when there is a failure to forget: not per event.
                if self.is_failing.swap(false, Ordering::AcqRel) {
                    *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
            Err(Some(PublishError::Denied { .. })) => slot.store(true, Ordering::Relaxed),
            Err(Some(e @ PublishError::Retriable { .. })) => {
                *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.is_failing.store(true, Ordering::Release);
            }
            Err(_) => {}
        }
    }

    /// The last delivery's retriable error, when no record was
    /// acknowledged since.
    pub fn failing(&self) -> Option<String> {
        if !self.is_failing.load(Ordering::Acquire) {
            return None;
        }
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records waiting, and for how long none was acknowledged, when
    /// records have waited longer than `threshold`.
    pub fn stalled(&self, threshold: Duration) -> Option<(i64, Duration)> {
        let pending = self.pending.load(Ordering::Acquire);
        if pending <= 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.progress_ms.load(Ordering::Relaxed));
        let since = Duration::from_millis(since);
        (since >= threshold).then_some((pending, since))
    }

    /// Topics whose last write the ACLs denied, named with their role.
    pub fn denied_topics(&self) -> Vec<String> {
        Destination::ALL
            .iter()
            .filter(|d| self.denied[**d as usize].load(Ordering::Relaxed))
            .filter_map(|d| {
                let topic = self.topics[*d as usize].as_deref()?;
                Some(format!("the {} topic \"{topic}\"", d.role()))
            })
            .collect()
    }

    /// The last client-wide error, if it is recent.
    pub fn recent_error(&self) -> Option<ClientError> {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(_, at)| at.elapsed() < CLIENT_ERROR_RELEVANT)
            .map(|(e, _)| e.clone())
    }

    /// True once after a client-wide error: time to ask the producer
    /// whether it is fatally failed. One atomic load when there was none.
    pub fn take_fatal_check(&self) -> bool {
        self.check_fatal.load(Ordering::Relaxed) && self.check_fatal.swap(false, Ordering::AcqRel)
    }

    /// Keeps `error` as the latest; true when it is news (another kind of
    /// error than the last, or the last is older than [`RELOG`]), so that
    /// a broker refusing every reconnection is logged once, not per attempt.
    fn record(&self, error: ClientError) -> bool {
        // An unreachable broker after a refused login is the same refusal
        // seen again: keep the more telling error while it is recent.
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        let news = match &*last {
            Some((previous, at)) => {
                std::mem::discriminant(previous) != std::mem::discriminant(&error)
                    || at.elapsed() >= RELOG
            }
            None => true,
        };
        let keep = matches!(
            (&*last, &error),
            (Some((ClientError::Authentication(_) | ClientError::Tls(_), at)), ClientError::Transport(_))
                if at.elapsed() < CLIENT_ERROR_RELEVANT
        );
        if !keep {
            *last = Some((error, Instant::now()));
        }
        news && !keep
    }

    /// What readiness says of a client-wide error.
    pub fn describe(&self, error: &ClientError) -> String {
        match error {
            ClientError::Authentication(reason) => format!(
                "kafka refused authentication ({}): {reason}",
                self.principal
            ),
            ClientError::Tls(reason) => format!(
                "the TLS handshake with kafka failed ({}; check ssl.ca.location and the brokers' certificate names): {reason}",
                self.principal
            ),
            ClientError::Transport(reason) => format!("no kafka broker answers: {reason}"),
        }
    }
}

/// The librdkafka client context of every client the bridge makes: it
/// reports client-wide errors to [`KafkaHealth`] and logs them.
#[derive(Clone)]
pub struct Observer {
    pub health: Arc<KafkaHealth>,
    pub client: &'static str,
}

impl ClientContext for Observer {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let kind = match code {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                Some(ClientError::Authentication(reason.to_owned()))
            }
            Some(RDKafkaErrorCode::SSL) => Some(ClientError::Tls(reason.to_owned())),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::Resolve) => {
                Some(ClientError::Transport(reason.to_owned()))
            }
            // A refused login also shows up as a broken connection whose
            // reason names it (librdkafka then reports the transport code).
            Some(RDKafkaErrorCode::BrokerTransportFailure)
                if reason.contains("SASL authentication") =>
            {
                Some(ClientError::Authentication(reason.to_owned()))
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure)
                if reason.contains("SSL handshake failed") =>
            {
                Some(ClientError::Tls(reason.to_owned()))
            }
            _ => None,
        };
        self.health.check_fatal.store(true, Ordering::Release);
        // librdkafka logs each failure itself (target `librdkafka`); this
        // adds who the bridge was to the cluster, once per kind of error.
        match kind {
            Some(kind @ (ClientError::Authentication(_) | ClientError::Tls(_))) => {
                if self.health.record(kind) {
                    error!(client = self.client, principal = %self.health.principal, %error, reason, "kafka refuses the bridge's client");
                }
            }
            Some(kind) => {
                if self.health.record(kind) {
                    warn!(client = self.client, %error, reason, "no kafka broker answers");
                }
            }
            None => warn!(client = self.client, %error, reason, "kafka client error"),
        }
    }
}

/// Readiness's metadata client is a consumer that never consumes.
impl ConsumerContext for Observer {}

/// A health for tests: SASL_SSL, SCRAM-SHA-512, user `bridge`, topics
/// `m` and `m.dlq`.
#[cfg(test)]
pub(super) fn test_health() -> Arc<KafkaHealth> {
    KafkaHealth::new(
        Principal {
            mechanism: Some("SCRAM-SHA-512".into()),
            user: Some("bridge".into()),
            protocol: Some("SASL_SSL".into()),
        },
        [Some("m".into()), Some("m.dlq".into()), None, None],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Arc<KafkaHealth> {
        test_health()
    }

    #[test]
    fn a_refused_login_is_kept_over_the_broken_connections_that_follow() {
        let h = health();
        let observer = Observer {
            health: h.clone(),
            client: "test",
        };
        observer.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        );
        observer.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "3/3 brokers are down",
        );
        let e = h.recent_error().unwrap();
        let text = h.describe(&e);
        assert!(text.contains("refused authentication"), "{text}");
        assert!(
            text.contains("SCRAM-SHA-512") && text.contains("user \"bridge\""),
            "{text}"
        );
    }

    #[test]
    fn a_stall_is_records_waiting_without_an_ack() {
        let h = health();
        assert_eq!(h.stalled(Duration::ZERO), None);
        h.enqueued();
        assert_eq!(h.stalled(Duration::ZERO).map(|s| s.0), Some(1));
        assert_eq!(h.stalled(Duration::from_secs(60)), None);
        h.settled(Destination::Record, Ok(()));
        assert_eq!(h.stalled(Duration::ZERO), None);
    }

    #[test]
    fn a_denied_topic_is_named_until_a_write_to_it_is_acknowledged() {
        let h = health();
        h.enqueued();
        h.settled(
            Destination::DeadLetter,
            Err(Some(&PublishError::Denied {
                code: RDKafkaErrorCode::TopicAuthorizationFailed,
            })),
        );
        assert_eq!(h.denied_topics(), ["the dead-letter topic \"m.dlq\""]);
        h.enqueued();
        h.settled(Destination::DeadLetter, Ok(()));
        assert!(h.denied_topics().is_empty());
        // Refused at once by the producer (the ACL known from metadata):
        // named too, and a later acknowledged write clears it.
        let denied = PublishError::Denied {
            code: RDKafkaErrorCode::TopicAuthorizationFailed,
        };
        h.refused(Destination::Record, &PublishError::QueueFull);
        assert!(h.denied_topics().is_empty());
        h.refused(Destination::Record, &denied);
        assert_eq!(h.denied_topics(), ["the member topic \"m\""]);
        h.enqueued();
        h.settled(Destination::Record, Ok(()));
        assert!(h.denied_topics().is_empty());
    }

    #[test]
    fn any_client_error_asks_once_whether_the_producer_is_fatally_failed() {
        let h = health();
        let observer = Observer {
            health: h.clone(),
            client: "test",
        };
        assert!(!h.take_fatal_check());
        observer.error(
            KafkaError::Global(RDKafkaErrorCode::OutOfOrderSequenceNumber),
            "test fatal",
        );
        assert!(h.take_fatal_check());
        assert!(!h.take_fatal_check());
    }
}
