//! Where a record goes: the member, dead-letter or raw topic, or the
//! bridge's internal one. Shared by the sink's parts, the metrics' labels
//! and the follower.

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Destination {
    /// Member records (`KAFKA_TOPIC`).
    Record,
    DeadLetter,
    /// Raw records (`BRIDGE_RAW_TOPIC`).
    Raw,
    /// What the replicas share (`BRIDGE_INTERNAL_TOPIC`): store apps'
    /// tickets. Never read by consumers.
    Internal,
}

impl Destination {
    pub const ALL: [Destination; 4] = [
        Destination::Record,
        Destination::DeadLetter,
        Destination::Raw,
        Destination::Internal,
    ];

    /// What the topic is, in readiness's words.
    pub fn role(self) -> &'static str {
        match self {
            Destination::Record => "member",
            Destination::DeadLetter => "dead-letter",
            Destination::Raw => "raw",
            Destination::Internal => "internal",
        }
    }

    /// The `destination` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Destination::Record => "record",
            Destination::DeadLetter => "dead_letter",
            Destination::Raw => "raw",
            Destination::Internal => "internal",
        }
    }
}
