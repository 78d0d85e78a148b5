//! What an authentic event becomes on Kafka. Each form is a public schema
//! that other teams consume (JSON Schemas in `deploy/schema/`, described in
//! docs/records.md):
//!
//! * [`member`]: the chat-member family (users added, deleted, withdrawn;
//!   the bot added, removed), normalized, one record type per event type;
//! * [`raw`]: any other event, its decrypted envelope as Feishu sent it;
//! * [`dead_letter`]: an authentic event that cannot become its record;
//! * [`snapshot`]: a chat's whole membership, listed from the OpenAPI.

pub mod dead_letter;
pub mod member;
pub mod raw;
pub mod snapshot;

use serde::Serialize;

use crate::protocol::VerifiedEvent;

pub use dead_letter::{DeadLetter, DEAD_LETTER_SCHEMA};
pub use member::{I18nNames, MemberKind, MemberRecord, User, UserIds};
pub use raw::{RawRecord, RAW_SCHEMA};
pub use snapshot::{Trigger, SNAPSHOT_SCHEMA};

/// What every record says of its event: in its headers (and CloudEvents
/// attributes), and, for a member record, in its value. Borrowed from the
/// event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta<'a> {
    /// `header.event_id`; empty only for a dead letter of an event that had none.
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// `header.create_time` in milliseconds.
    pub create_time_ms: Option<i64>,
    pub tenant_key: Option<&'a str>,
    pub app_id: Option<&'a str>,
}

impl<'a> Meta<'a> {
    /// What can be read of any event, best effort: for the records that
    /// are published whatever its header holds (raw records, dead letters).
    pub fn lenient(event: &'a VerifiedEvent) -> Self {
        Meta {
            event_id: event.event_id().unwrap_or_default(),
            event_type: event.event_type(),
            create_time_ms: event.create_time_ms(),
            tenant_key: event.tenant_key(),
            app_id: event.app_id(),
        }
    }
}

/// Why an authentic event could not become a record. The message goes to the
/// dead-letter record and the log; it names fields, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("header.event_id is missing")]
    MissingEventId,
    #[error("event.chat_id is missing or empty")]
    MissingChatId,
    #[error("event is missing or not an object")]
    MissingEvent,
    #[error("header.create_time is not a millisecond timestamp")]
    BadCreateTime,
    #[error("{part} has a field of the wrong type: {detail}")]
    WrongType { part: &'static str, detail: String },
}

/// The JSON Schema of `deploy/schema/<name>.json`, for the tests.
#[cfg(test)]
pub(crate) fn schema_validator(name: &str) -> jsonschema::Validator {
    let path = format!("{}/deploy/schema/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("schema file");
    jsonschema::validator_for(&serde_json::from_str(&text).expect("schema is JSON"))
        .expect("valid schema")
}
