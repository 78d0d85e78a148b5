//! Where a record goes: the member, dead-letter or raw topic. Shared by the
//! sink's parts, the metrics' labels and the follower.

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
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

    /// What the topic is, in readiness's words.
    pub fn role(self) -> &'static str {
        match self {
            Destination::Record => "member",
            Destination::DeadLetter => "dead-letter",
            Destination::Raw => "raw",
        }
    }

    /// The `destination` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Destination::Record => "record",
            Destination::DeadLetter => "dead_letter",
            Destination::Raw => "raw",
        }
    }
}
