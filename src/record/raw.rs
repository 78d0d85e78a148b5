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
//!
//! The app lifecycle events (`app_open`, `app_status_change`,
//! `app_uninstalled`) exist only as schema 1.0 envelopes (`uuid`, `token`,
//! `ts`, `type`, `event` with its `app_id` and `tenant_key`); they are
//! published the same way, under a schema name of their own,
//! [`LIFECYCLE_SCHEMA`], keyed by their tenant (`event.tenant_key`).

use super::{Meta, NormalizeError};
use crate::protocol::{Schema, VerifiedEvent};

/// The `schema` header of every raw record (the value is Feishu's own
/// envelope, whose `schema` field says `2.0`); its JSON Schema is
/// `deploy/schema/feishu.raw_event.v1.json`.
pub const RAW_SCHEMA: &str = "feishu.raw_event.v1";

/// The `schema` header of a raw schema 1.0 lifecycle event; JSON Schema
/// `deploy/schema/feishu.raw_event_1_0.v1.json`.
pub const LIFECYCLE_SCHEMA: &str = "feishu.raw_event_1_0.v1";

/// The `schema` header of `event`'s raw record.
pub fn schema_of(event: &VerifiedEvent) -> &'static str {
    match event.schema() {
        Schema::V2 => RAW_SCHEMA,
        Schema::V1 => LIFECYCLE_SCHEMA,
    }
}

/// A raw record and what its headers say of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord<'a> {
    /// `create_time_ms` is `header.create_time` when it reads as
    /// milliseconds: the envelope is published whatever it holds.
    pub meta: Meta<'a>,
    pub key: Option<&'a str>,
    /// The envelope's text, token redacted.
    pub value: String,
}

/// The raw record of a verified v2 event. Only an event without an
/// `event_id` cannot be one: it could not be deduplicated.
pub fn encode(event: &VerifiedEvent) -> Result<RawRecord<'_>, NormalizeError> {
    if event.event_id().is_none_or(str::is_empty) {
        return Err(NormalizeError::MissingEventId);
    }
    Ok(RawRecord {
        meta: Meta::lenient(event),
        key: key(event),
        value: event.redacted(),
    })
}

/// The record key of a raw event (module documentation).
pub fn key(event: &VerifiedEvent) -> Option<&str> {
    event
        .chat_id()
        .or_else(|| event.tenant_key().filter(|s| !s.is_empty()))
        .or_else(|| event.app_id().filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn verified(v: Value) -> VerifiedEvent {
        VerifiedEvent::for_tests(v).expect("classifiable")
    }

    #[test]
    fn the_envelope_is_published_as_is_but_for_the_token() {
        let env = json!({"schema":"2.0","header":{"event_id":"m1","token":"secret-token","create_time":"1608725989000",
            "event_type":"im.message.receive_v1","tenant_key":"t1","app_id":"cli_1"},
            "event":{"sender":{"sender_id":{"open_id":"ou_1"}},"message":{"chat_id":"oc_9","content":"{\"text\":\"你好 🎉\"}"}}});
        let event = verified(env.clone());
        let rec = encode(&event).unwrap();
        let mut want = env;
        want["header"]["token"] = "[redacted]".into();
        // Byte for byte: the value is Feishu's envelope, not a re-arrangement.
        assert_eq!(rec.value, serde_json::to_string(&want).unwrap());
        assert_eq!(rec.key, Some("oc_9"));
        assert_eq!(
            rec.meta,
            Meta {
                event_id: "m1",
                event_type: "im.message.receive_v1",
                create_time_ms: Some(1608725989000),
                tenant_key: Some("t1"),
                app_id: Some("cli_1"),
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
            let event = verified(json!({"header": h, "event": event}));
            encode(&event).unwrap().key.map(str::to_owned)
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
        assert_eq!(
            serde_json::from_str::<Value>(&rec.value).unwrap()["event"],
            5
        );
    }

    #[test]
    fn raw_records_match_their_json_schema() {
        let path = format!(
            "{}/deploy/schema/feishu.raw_event.v1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let event = verified(
            json!({"schema":"2.0","header":{"event_id":"m1","token":"tok","create_time":"1",
            "event_type":"im.message.receive_v1","tenant_key":"t1","app_id":"cli_1"},"event":{"message":{"chat_id":"oc_9"}}}),
        );
        let rec: Value = serde_json::from_str(&encode(&event).unwrap().value).unwrap();
        assert!(v.is_valid(&rec), "{rec}");
        assert!(!v.is_valid(&json!({"header":{"event_id":"m1","event_type":"x","token":"tok"}})));
    }

    #[test]
    fn a_lifecycle_event_is_its_1_0_envelope_token_redacted_keyed_by_tenant() {
        let path = format!(
            "{}/deploy/schema/feishu.raw_event_1_0.v1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let event = verified(
            json!({"uuid":"u-1","token":"secret-token","ts":"1603977298.0000","type":"event_callback",
            "event":{"app_id":"cli_1","tenant_key":"tk","type":"app_status_change","status":"start_by_tenant"}}),
        );
        assert_eq!(schema_of(&event), LIFECYCLE_SCHEMA);
        let rec = encode(&event).unwrap();
        assert_eq!(rec.key, Some("tk"));
        assert_eq!(
            (rec.meta.event_id, rec.meta.app_id, rec.meta.tenant_key),
            ("u-1", Some("cli_1"), Some("tk"))
        );
        assert!(!rec.value.contains("secret-token"));
        let value: Value = serde_json::from_str(&rec.value).unwrap();
        assert!(v.is_valid(&value), "{value}");
        assert!(!v.is_valid(&json!({"uuid":"u","token":"secret","event":{"type":"x"}})));
    }

    proptest::proptest! {
        #[test]
        fn encode_never_panics(doc in crate::record::member::tests::arb_json()) {
            if let Some(e) = VerifiedEvent::for_tests(json!({"schema":"2.0","header":{"event_id":"e","event_type":"x.y_v1"},"event": doc.clone()})) {
                let rec: Value = serde_json::from_str(&encode(&e).unwrap().value).unwrap();
                proptest::prop_assert_eq!(&rec["event"], &doc);
            }
            if let Some(e) = VerifiedEvent::for_tests(json!({"header": doc, "event": {}})) {
                if let Ok(rec) = encode(&e) {
                    let rec: Value = serde_json::from_str(&rec.value).unwrap();
                    proptest::prop_assert!(rec["header"].get("token").is_none_or(|t| t == "[redacted]"));
                }
            }
        }
    }
}
