//! The dead-letter record: an authentic event that cannot become its
//! record (no `event_id`, no `chat_id`, a field of the wrong type) is kept,
//! with the reason, instead of being lost or blocking its chat.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{Meta, NormalizeError};
use crate::protocol::VerifiedEvent;

/// Value of the `schema` field and header of every dead-letter record.
/// v2 added `tenant_key` and `app_id` (docs/records.md, "Upgrading").
pub const DEAD_LETTER_SCHEMA: &str = "feishu.dead_letter.v2";

/// What goes to the dead-letter topic: the decrypted envelope (token
/// redacted) and the reason it could not be normalized.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub schema: &'static str,
    pub reason: String,
    pub event_id: Option<&'a str>,
    pub event_type: &'a str,
    /// `header.tenant_key` and `header.app_id`, when the envelope has them.
    pub tenant_key: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub received_at_ms: i64,
    /// The envelope's text as Feishu sent it, token redacted.
    pub envelope: Box<RawValue>,
    #[serde(skip)]
    event: &'a VerifiedEvent,
}

impl<'a> DeadLetter<'a> {
    pub fn new(event: &'a VerifiedEvent, reason: &NormalizeError, received_at_ms: i64) -> Self {
        // The redacted text of a JSON object is a JSON object (a value
        // replaced by a string); should that ever fail, the record says
        // null rather than carry a token.
        let envelope =
            RawValue::from_string(event.redacted()).unwrap_or_else(|_| RawValue::NULL.to_owned());
        DeadLetter {
            schema: DEAD_LETTER_SCHEMA,
            reason: reason.to_string(),
            event_id: event.event_id(),
            event_type: event.event_type(),
            tenant_key: event.tenant_key(),
            app_id: event.app_id(),
            received_at_ms,
            envelope,
            event,
        }
    }

    /// Partition key for the dead letter: the chat when it can be read, so
    /// that a consumer replaying dead letters keeps per-chat order.
    pub fn chat_id(&self) -> Option<&'a str> {
        self.event.chat_id()
    }

    /// What its headers say of the event, as far as it can be read: the
    /// event could not be normalized, so `create_time` (best effort) or any
    /// other field may be what is wrong with it.
    pub fn meta(&self) -> Meta<'a> {
        Meta::lenient(self.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::member::{normalize, MemberKind};
    use serde_json::{json, Value};

    #[test]
    fn dead_letter_redacts_token_and_keeps_chat() {
        let e = VerifiedEvent::for_tests(
            json!({"header":{"event_id":"e","event_type":"t","token":"secret-token","tenant_key":"tk","create_time":"12"},"event":{"chat_id":"oc_1","external":"x"}}),
        )
        .unwrap();
        let err = normalize(&e, MemberKind::UserWithdrawn, 0).unwrap_err();
        let dl = DeadLetter::new(&e, &err, 7);
        assert_eq!(dl.chat_id(), Some("oc_1"));
        assert_eq!((dl.tenant_key, dl.app_id), (Some("tk"), None));
        let meta = dl.meta();
        assert_eq!(meta.tenant_key, Some("tk"));
        assert_eq!(meta.create_time_ms, Some(12));
        assert_eq!(meta.event_id, "e");
        let text = serde_json::to_string(&dl).unwrap();
        assert!(!text.contains("secret-token"));
        assert!(text.contains("wrong type"));
        let message = VerifiedEvent::for_tests(
            json!({"header":{"event_type":"im.message.receive_v1"},"event":{"message":{"chat_id":"oc_2"}}}),
        )
        .unwrap();
        let dl = DeadLetter::new(&message, &NormalizeError::MissingEventId, 0);
        assert_eq!(dl.chat_id(), Some("oc_2"));
    }

    #[test]
    fn dead_letters_match_their_json_schema() {
        let path = format!(
            "{}/deploy/schema/feishu.dead_letter.v2.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let e = VerifiedEvent::for_tests(json!({"header":{"event_type":"im.chat.member.user.withdrawn_v1","token":"t"},"event":{}})).unwrap();
        let err = normalize(&e, MemberKind::UserWithdrawn, 0).unwrap_err();
        let value = serde_json::to_value(DeadLetter::new(&e, &err, 3)).unwrap();
        assert!(v.is_valid(&value), "{value}");
    }
}
