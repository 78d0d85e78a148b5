//! Why a message was not acknowledged, sorted by what Feishu's retry can
//! do about it.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("producer queue is full")]
    QueueFull,
    #[error("kafka rejected the message ({code:?}); retrying may succeed")]
    Retriable { code: RDKafkaErrorCode },
    /// The cluster refused the bridge's principal: an ACL or the
    /// credentials. Answered like every failure (Feishu retries), and
    /// counted apart, because the remedy is an operator's, not time's.
    #[error("kafka denied the write ({code:?}): the bridge's user lacks an ACL or its credentials were refused")]
    Denied { code: RDKafkaErrorCode },
    #[error("kafka rejected the message ({code:?}); retrying will not help until the cluster or config changes")]
    Permanent { code: RDKafkaErrorCode },
    #[error("kafka client error: {0}")]
    Client(String),
    #[error("delivery report was lost (producer shut down or replaced)")]
    Canceled,
}

impl PublishError {
    /// Every value [`PublishError::kind`] returns: the `kind` label of
    /// `feishu_bridge_kafka_delivery_errors_total`.
    pub const KINDS: [&'static str; 6] = [
        "queue_full",
        "retriable",
        "denied",
        "permanent",
        "client",
        "canceled",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "queue_full",
            PublishError::Retriable { .. } => "retriable",
            PublishError::Denied { .. } => "denied",
            PublishError::Permanent { .. } => "permanent",
            PublishError::Client(_) => "client",
            PublishError::Canceled => "canceled",
        }
    }

    pub(super) fn from_kafka(err: &KafkaError) -> Self {
        match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
            Some(code) if is_denial(code) => PublishError::Denied { code },
            Some(code) if is_retriable(code) => PublishError::Retriable { code },
            Some(code) => PublishError::Permanent { code },
            None => PublishError::Client(err.to_string()),
        }
    }
}

/// Refusals of the principal: authorization (ACLs) and authentication.
fn is_denial(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | GroupAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | SaslAuthenticationFailed
            | Authentication
    )
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
            // The producer was fatally failed (its idempotence state is
            // lost) and is replaced: the retry goes through the new one.
            | Fatal
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_list_every_kind() {
        let all = [
            PublishError::QueueFull,
            PublishError::Retriable {
                code: RDKafkaErrorCode::MessageTimedOut,
            },
            PublishError::Denied {
                code: RDKafkaErrorCode::TopicAuthorizationFailed,
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
    fn queue_full_and_timeouts_are_retriable_size_is_permanent_acls_are_denials() {
        let kind = |code| PublishError::from_kafka(&KafkaError::MessageProduction(code)).kind();
        assert_eq!(kind(RDKafkaErrorCode::QueueFull), "queue_full");
        assert_eq!(kind(RDKafkaErrorCode::MessageTimedOut), "retriable");
        assert_eq!(kind(RDKafkaErrorCode::NotEnoughReplicas), "retriable");
        assert_eq!(kind(RDKafkaErrorCode::Fatal), "retriable");
        assert_eq!(kind(RDKafkaErrorCode::MessageSizeTooLarge), "permanent");
        assert_eq!(kind(RDKafkaErrorCode::TopicAuthorizationFailed), "denied");
        assert_eq!(kind(RDKafkaErrorCode::Authentication), "denied");
    }
}
