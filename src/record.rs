//! The normalized withdrawal record: the public schema other teams consume
//! (its JSON Schema is `deploy/schema/feishu.chat_member_withdrawn.v1.json`;
//! README.md, Records, describes it), and the
//! dead-letter record for authentic events that cannot be normalized.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::VerifiedEvent;

/// Value of the `schema` field and header of every withdrawal record.
pub const RECORD_SCHEMA: &str = "feishu.chat_member_withdrawn.v1";
/// Value of the `schema` field and header of every dead-letter record.
pub const DEAD_LETTER_SCHEMA: &str = "feishu.dead_letter.v1";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WithdrawalRecord {
    pub schema: &'static str,
    pub event_id: String,
    pub event_type: String,
    pub create_time_ms: Option<i64>,
    pub tenant_key: Option<String>,
    pub app_id: Option<String>,
    pub chat_id: String,
    pub chat_name: Option<String>,
    pub chat_i18n_names: I18nNames,
    pub external: Option<bool>,
    pub operator: UserIds,
    pub operator_tenant_key: Option<String>,
    pub users: Vec<User>,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct I18nNames {
    pub zh_cn: Option<String>,
    pub en_us: Option<String>,
    pub ja_jp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserIds {
    pub open_id: Option<String>,
    pub union_id: Option<String>,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub name: Option<String>,
    pub tenant_key: Option<String>,
    pub open_id: Option<String>,
    pub union_id: Option<String>,
    pub user_id: Option<String>,
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

// What Feishu sends; every field optional and unknown fields ignored, so a
// new field in Feishu's payload never breaks the bridge.
#[derive(Deserialize)]
struct InHeader {
    event_id: Option<String>,
    create_time: Option<CreateTime>,
    app_id: Option<String>,
    tenant_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CreateTime {
    Text(String),
    Number(i64),
}

#[derive(Deserialize)]
struct InEvent {
    chat_id: Option<String>,
    operator_id: Option<UserIds>,
    external: Option<bool>,
    operator_tenant_key: Option<String>,
    users: Option<Vec<InUser>>,
    name: Option<String>,
    i18n_names: Option<I18nNames>,
}

#[derive(Deserialize)]
struct InUser {
    name: Option<String>,
    tenant_key: Option<String>,
    user_id: Option<UserIds>,
}

/// Builds the record from a verified `im.chat.member.user.withdrawn_v1` v2 event.
pub fn normalize(
    event: &VerifiedEvent,
    received_at_ms: i64,
) -> Result<WithdrawalRecord, NormalizeError> {
    let envelope = event.envelope();
    let null = Value::Null;
    let header = InHeader::deserialize(envelope.get("header").unwrap_or(&null)).map_err(|e| {
        NormalizeError::WrongType {
            part: "header",
            detail: e.to_string(),
        }
    })?;
    let body = match envelope.get("event") {
        Some(v @ Value::Object(_)) => v,
        _ => return Err(NormalizeError::MissingEvent),
    };
    let body = InEvent::deserialize(body).map_err(|e| NormalizeError::WrongType {
        part: "event",
        detail: e.to_string(),
    })?;

    let event_id = header
        .event_id
        .filter(|s| !s.is_empty())
        .ok_or(NormalizeError::MissingEventId)?;
    let chat_id = body
        .chat_id
        .filter(|s| !s.is_empty())
        .ok_or(NormalizeError::MissingChatId)?;
    let create_time_ms = match header.create_time {
        None => None,
        Some(CreateTime::Number(n)) => Some(n),
        Some(CreateTime::Text(t)) => Some(
            t.trim()
                .parse::<i64>()
                .map_err(|_| NormalizeError::BadCreateTime)?,
        ),
    };

    Ok(WithdrawalRecord {
        schema: RECORD_SCHEMA,
        event_id,
        event_type: event.event_type().to_owned(),
        create_time_ms,
        tenant_key: header.tenant_key,
        app_id: header.app_id,
        chat_id,
        chat_name: body.name,
        chat_i18n_names: body.i18n_names.unwrap_or_default(),
        external: body.external,
        operator: body.operator_id.unwrap_or_default(),
        operator_tenant_key: body.operator_tenant_key,
        users: body
            .users
            .unwrap_or_default()
            .into_iter()
            .map(|u| {
                let ids = u.user_id.unwrap_or_default();
                User {
                    name: u.name,
                    tenant_key: u.tenant_key,
                    open_id: ids.open_id,
                    union_id: ids.union_id,
                    user_id: ids.user_id,
                }
            })
            .collect(),
        received_at_ms,
    })
}

/// What goes to the dead-letter topic: the decrypted envelope (token
/// redacted) and the reason it could not be normalized.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub schema: &'static str,
    pub reason: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub received_at_ms: i64,
    pub envelope: Value,
}

impl DeadLetter {
    pub fn new(event: &VerifiedEvent, reason: &NormalizeError, received_at_ms: i64) -> Self {
        DeadLetter {
            schema: DEAD_LETTER_SCHEMA,
            reason: reason.to_string(),
            event_id: event.event_id().map(str::to_owned),
            event_type: event.event_type().to_owned(),
            received_at_ms,
            envelope: event.redacted_envelope(),
        }
    }

    /// Partition key for the dead letter: the chat when it can be read, so
    /// that a consumer replaying dead letters keeps per-chat order.
    pub fn chat_id(&self) -> Option<&str> {
        self.envelope
            .get("event")
            .and_then(|e| e.get("chat_id"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED: &str = include_str!("../tests/fixtures/seed_sample.json");

    fn verified(v: Value) -> VerifiedEvent {
        VerifiedEvent::for_tests(v).expect("classifiable")
    }

    #[test]
    fn seed_sample_normalizes_exactly() {
        let e = verified(serde_json::from_str(SEED).unwrap());
        let rec = normalize(&e, 42).unwrap();
        let got = serde_json::to_value(&rec).unwrap();
        // The expected record of the seed sample, shared with the integration tests.
        let mut want: Value =
            serde_json::from_str(include_str!("../tests/fixtures/seed_record.json")).unwrap();
        want["received_at_ms"] = json!(42);
        assert_eq!(got, want);
    }

    #[test]
    fn absent_fields_are_null_and_extra_fields_tolerated() {
        let e = verified(
            json!({"schema":"2.0","header":{"event_id":"e","event_type":"im.chat.member.user.withdrawn_v1","future":1},
            "event":{"chat_id":"oc_x","brand_new":{"a":[1]},"users":[{"name":"🎉 名"}]}}),
        );
        let v = serde_json::to_value(normalize(&e, 1).unwrap()).unwrap();
        assert_eq!(v["create_time_ms"], Value::Null);
        assert_eq!(v["tenant_key"], Value::Null);
        assert_eq!(v["chat_name"], Value::Null);
        assert_eq!(
            v["chat_i18n_names"],
            json!({"zh_cn":null,"en_us":null,"ja_jp":null})
        );
        assert_eq!(
            v["operator"],
            json!({"open_id":null,"union_id":null,"user_id":null})
        );
        assert_eq!(v["external"], Value::Null);
        assert_eq!(
            v["users"],
            json!([{"name":"🎉 名","tenant_key":null,"open_id":null,"union_id":null,"user_id":null}])
        );
        let e = verified(
            json!({"schema":"2.0","header":{"event_id":"e","event_type":"t"},"event":{"chat_id":"c"}}),
        );
        assert_eq!(
            serde_json::to_value(normalize(&e, 1).unwrap()).unwrap()["users"],
            json!([])
        );
    }

    #[test]
    fn unnormalizable_events_say_why() {
        let cases = [
            (
                json!({"header":{"event_type":"t"},"event":{"chat_id":"c"}}),
                NormalizeError::MissingEventId,
            ),
            (
                json!({"header":{"event_id":"e","event_type":"t"},"event":{}}),
                NormalizeError::MissingChatId,
            ),
            (
                json!({"header":{"event_id":"e","event_type":"t"},"event":{"chat_id":""}}),
                NormalizeError::MissingChatId,
            ),
            (
                json!({"header":{"event_id":"e","event_type":"t"}}),
                NormalizeError::MissingEvent,
            ),
            (
                json!({"header":{"event_id":"e","event_type":"t","create_time":"soon"},"event":{"chat_id":"c"}}),
                NormalizeError::BadCreateTime,
            ),
        ];
        for (env, want) in cases {
            assert_eq!(normalize(&verified(env), 0).unwrap_err(), want);
        }
        for bad in [
            json!({"chat_id": 5}),
            json!({"chat_id":"c","external":"yes"}),
            json!({"chat_id":"c","users":{}}),
            json!({"chat_id":"c","users":[{"user_id":"x"}]}),
        ] {
            let e = verified(json!({"header":{"event_id":"e","event_type":"t"},"event": bad}));
            assert!(matches!(
                normalize(&e, 0),
                Err(NormalizeError::WrongType { part: "event", .. })
            ));
        }
    }

    #[test]
    fn dead_letter_redacts_token_and_keeps_chat() {
        let e = verified(
            json!({"header":{"event_id":"e","event_type":"t","token":"secret-token"},"event":{"chat_id":"oc_1","external":"x"}}),
        );
        let err = normalize(&e, 0).unwrap_err();
        let dl = DeadLetter::new(&e, &err, 7);
        assert_eq!(dl.chat_id(), Some("oc_1"));
        let text = serde_json::to_string(&dl).unwrap();
        assert!(!text.contains("secret-token"));
        assert!(text.contains("wrong type"));
    }

    proptest::proptest! {
        #[test]
        fn normalize_never_panics(doc in arb_json()) {
            let env = json!({"schema":"2.0","header":{"event_id":"e","event_type":"im.chat.member.user.withdrawn_v1"},"event": doc.clone()});
            if let Some(e) = VerifiedEvent::for_tests(env) {
                let _ = normalize(&e, 0);
            }
            if let Some(e) = VerifiedEvent::for_tests(json!({"header": doc, "event": {}})) {
                let _ = normalize(&e, 0);
            }
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z_]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::hash_map(
                    prop_oneof![
                        Just("chat_id".to_string()),
                        Just("users".to_string()),
                        Just("user_id".to_string()),
                        Just("event_id".to_string()),
                        Just("create_time".to_string()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use serde_json::json;

    fn validator(path: &str) -> jsonschema::Validator {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .expect("schema file");
        jsonschema::validator_for(&serde_json::from_str(&text).expect("schema is JSON"))
            .expect("valid schema")
    }

    #[test]
    fn records_match_the_published_json_schema() {
        let v = validator("deploy/schema/feishu.chat_member_withdrawn.v1.json");
        let full = VerifiedEvent::for_tests(
            serde_json::from_str(include_str!("../tests/fixtures/seed_sample.json")).unwrap(),
        )
        .unwrap();
        let sparse = VerifiedEvent::for_tests(json!({"header":{"event_id":"e","event_type":"im.chat.member.user.withdrawn_v1"},"event":{"chat_id":"c","users":[{}]}})).unwrap();
        for e in [full, sparse] {
            let value = serde_json::to_value(normalize(&e, 1).unwrap()).unwrap();
            let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{value}");
        }
        // The schema is strict enough to catch a missing key.
        assert!(!v.is_valid(&json!({"schema": RECORD_SCHEMA})));
    }

    #[test]
    fn dead_letters_match_their_json_schema() {
        let v = validator("deploy/schema/feishu.dead_letter.v1.json");
        let e = VerifiedEvent::for_tests(json!({"header":{"event_type":"im.chat.member.user.withdrawn_v1","token":"t"},"event":{}})).unwrap();
        let err = normalize(&e, 0).unwrap_err();
        let value = serde_json::to_value(DeadLetter::new(&e, &err, 3)).unwrap();
        assert!(v.is_valid(&value), "{value}");
    }
}
