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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use dead_letter::{DeadLetter, DEAD_LETTER_SCHEMA};
pub use member::{I18nNames, MemberKind, MemberRecord, User, UserIds};
pub use raw::{RawRecord, RAW_SCHEMA};
pub use snapshot::{Trigger, SNAPSHOT_SCHEMA};

/// What every record says of its event: in its headers (and CloudEvents
/// attributes), and, for a member record, in its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta {
    /// `header.event_id`; empty only for a dead letter of an event that had none.
    pub event_id: String,
    pub event_type: String,
    /// `header.create_time` in milliseconds.
    pub create_time_ms: Option<i64>,
    pub tenant_key: Option<String>,
    pub app_id: Option<String>,
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

/// The envelope's header as Feishu sends it; every field optional and
/// unknown fields ignored, so a new field never breaks the bridge.
#[derive(Deserialize)]
struct InHeader {
    event_id: Option<String>,
    create_time: Option<CreateTime>,
    app_id: Option<String>,
    tenant_key: Option<String>,
}

/// Feishu sends `create_time` as a string of milliseconds; a number is
/// taken too.
#[derive(Deserialize)]
#[serde(untagged)]
enum CreateTime {
    Text(String),
    Number(i64),
}

impl CreateTime {
    fn millis(&self) -> Option<i64> {
        match self {
            CreateTime::Number(n) => Some(*n),
            CreateTime::Text(t) => t.trim().parse().ok(),
        }
    }
}

/// A header text field, when it is a string.
fn header_text<'a>(envelope: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    envelope
        .get("header")
        .and_then(|h| h.get(field))
        .and_then(Value::as_str)
}

/// `header.create_time` in ms, when it reads as one. Best effort, for the
/// records that are published whatever it holds (raw, dead letters).
fn lenient_create_time(envelope: &Map<String, Value>) -> Option<i64> {
    let t = envelope.get("header")?.get("create_time")?;
    t.as_i64()
        .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The JSON Schema of `deploy/schema/<name>.json`, for the tests.
#[cfg(test)]
pub(crate) fn schema_validator(name: &str) -> jsonschema::Validator {
    let path = format!("{}/deploy/schema/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("schema file");
    jsonschema::validator_for(&serde_json::from_str(&text).expect("schema is JSON"))
        .expect("valid schema")
}

/// The chat an event is about, where it names one: `event.chat_id` (chat
/// and member events) or `event.message.chat_id` (message events).
pub fn chat_id(envelope: &Map<String, Value>) -> Option<&str> {
    let event = envelope.get("event")?;
    event
        .get("chat_id")
        .or_else(|| event.get("message").and_then(|m| m.get("chat_id")))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}
