//! Any other event, raw: the decrypted schema-2.0 envelope (`schema`,
//! `header`, `event`) exactly as Feishu sent it, but for its verification
//! token, which is redacted (a Kafka topic is no place for a credential).
//!
//! Key: the chat the event names (`event.chat_id`, or
//! `event.message.chat_id` for message events), so that a chat's raw
//! records keep their order as member records do. An event that names no
//! chat (contact changes, approvals, app events) is keyed by its tenant
//! (`header.tenant_key`), else its app (`header.app_id`): stable for the
//! same event and its retries, and the finest scope every event type has
//! in common, so that a tenant's non-chat events keep their order
//! relative to each other. The price is that they share one partition,
//! which suits events far rarer than messages. Only an envelope with
//! neither (Feishu sends none) goes without a key.

use serde_json::{Map, Value};

use super::{header_text, lenient_create_time, Meta, NormalizeError};
use crate::protocol::VerifiedEvent;

/// The `schema` header of every raw record (the value is Feishu's own
/// envelope, whose `schema` field says `2.0`); its JSON Schema is
/// `deploy/schema/feishu.raw_event.v1.json`.
pub const RAW_SCHEMA: &str = "feishu.raw_event.v1";

/// A raw record and what its headers say of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// `create_time_ms` is `header.create_time` when it reads as
    /// milliseconds: the envelope is published whatever it holds.
    pub meta: Meta,
    pub key: Option<String>,
    /// The envelope, token redacted.
    pub value: Value,
}

/// The raw record of a verified v2 event. Only an event without an
/// `event_id` cannot be one: it could not be deduplicated.
pub fn encode(event: &VerifiedEvent) -> Result<RawRecord, NormalizeError> {
    let event_id = event
        .event_id()
        .filter(|id| !id.is_empty())
        .ok_or(NormalizeError::MissingEventId)?;
    let envelope = event.envelope();
    let text = |field| header_text(envelope, field).map(str::to_owned);
    Ok(RawRecord {
        meta: Meta {
            event_id: event_id.to_owned(),
            event_type: event.event_type().to_owned(),
            create_time_ms: lenient_create_time(envelope),
            tenant_key: text("tenant_key"),
            app_id: text("app_id"),
        },
        key: key(envelope).map(str::to_owned),
        value: event.redacted_envelope(),
    })
}

/// The record key of a raw event (module documentation).
pub fn key(envelope: &Map<String, Value>) -> Option<&str> {
    let non_empty = |field| header_text(envelope, field).filter(|s| !s.is_empty());
    super::chat_id(envelope)
        .or_else(|| non_empty("tenant_key"))
        .or_else(|| non_empty("app_id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verified(v: Value) -> VerifiedEvent {
        VerifiedEvent::for_tests(v).expect("classifiable")
    }

    #[test]
    fn the_envelope_is_published_as_is_but_for_the_token() {
        let env = json!({"schema":"2.0","header":{"event_id":"m1","token":"secret-token","create_time":"1608725989000",
            "event_type":"im.message.receive_v1","tenant_key":"t1","app_id":"cli_1"},
            "event":{"sender":{"sender_id":{"open_id":"ou_1"}},"message":{"chat_id":"oc_9","content":"{\"text\":\"你好 🎉\"}"}}});
        let rec = encode(&verified(env.clone())).unwrap();
        let mut want = env;
        want["header"]["token"] = "[redacted]".into();
        assert_eq!(rec.value, want);
        // Key order too: the value is Feishu's envelope, not a re-arrangement.
        assert_eq!(
            serde_json::to_string(&rec.value).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        assert_eq!(rec.key.as_deref(), Some("oc_9"));
        assert_eq!(
            rec.meta,
            Meta {
                event_id: "m1".into(),
                event_type: "im.message.receive_v1".into(),
                create_time_ms: Some(1608725989000),
                tenant_key: Some("t1".into()),
                app_id: Some("cli_1".into()),
            }
        );
    }

    #[test]
    fn keys_fall_back_from_the_chat_to_the_tenant_to_the_app() {
        let key_of = |event: Value, header: Value| {
            let mut h = json!({"event_id":"e","event_type":"x.y_v1"});
            for (k, v) in header.as_object().unwrap() {
                h[k] = v.clone();
            }
            encode(&verified(json!({"header": h, "event": event})))
                .unwrap()
                .key
        };
        let both = json!({"tenant_key":"t","app_id":"a"});
        assert_eq!(
            key_of(json!({"chat_id":"oc_1"}), both.clone()).as_deref(),
            Some("oc_1")
        );
        assert_eq!(
            key_of(json!({"message":{"chat_id":"oc_2"}}), both.clone()).as_deref(),
            Some("oc_2")
        );
        assert_eq!(
            key_of(json!({"chat_id":""}), both.clone()).as_deref(),
            Some("t")
        );
        assert_eq!(
            key_of(json!({}), json!({"tenant_key":"","app_id":"a"})).as_deref(),
            Some("a")
        );
        assert_eq!(key_of(json!({}), json!({})), None);
    }

    #[test]
    fn without_an_event_id_it_is_a_dead_letter_and_a_bad_create_time_is_no_reason() {
        let no_id = verified(json!({"header":{"event_type":"x.y_v1"},"event":{}}));
        assert_eq!(encode(&no_id).unwrap_err(), NormalizeError::MissingEventId);
        let odd = verified(
            json!({"header":{"event_id":"e","event_type":"x.y_v1","create_time":"soon"},"event":5}),
        );
        let rec = encode(&odd).unwrap();
        assert_eq!(rec.meta.create_time_ms, None);
        assert_eq!(rec.value["event"], 5);
    }

    #[test]
    fn raw_records_match_their_json_schema() {
        let path = format!(
            "{}/deploy/schema/feishu.raw_event.v1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let rec = encode(&verified(json!({"schema":"2.0","header":{"event_id":"m1","token":"tok","create_time":"1",
            "event_type":"im.message.receive_v1","tenant_key":"t1","app_id":"cli_1"},"event":{"message":{"chat_id":"oc_9"}}})))
        .unwrap();
        assert!(v.is_valid(&rec.value), "{}", rec.value);
        assert!(!v.is_valid(&json!({"header":{"event_id":"m1","event_type":"x","token":"tok"}})));
    }

    proptest::proptest! {
        #[test]
        fn encode_never_panics(doc in crate::record::member::tests::arb_json()) {
            if let Some(e) = VerifiedEvent::for_tests(json!({"schema":"2.0","header":{"event_id":"e","event_type":"x.y_v1"},"event": doc.clone()})) {
                let rec = encode(&e).unwrap();
                proptest::prop_assert_eq!(&rec.value["event"], &doc);
            }
            if let Some(e) = VerifiedEvent::for_tests(json!({"header": doc, "event": {}})) {
                if let Ok(rec) = encode(&e) {
                    proptest::prop_assert!(rec.value["header"].get("token").is_none_or(|t| t == "[redacted]"));
                }
            }
        }
    }
}
