use super::*;
use serde_json::{json, Map, Value};

const SEED: &str = include_str!("../../../tests/fixtures/seed_sample.json");

fn verified(v: Value) -> VerifiedEvent {
    VerifiedEvent::for_tests(v).expect("classifiable")
}

/// The seed sample (a withdrawal) re-typed as `kind`.
fn seed_as(kind: MemberKind) -> Value {
    let mut v: Value = serde_json::from_str(SEED).unwrap();
    v["header"]["event_type"] = kind.event_type().into();
    v
}

/// The keys every record of `kind` has, nested ones as `parent.child`.
fn expected_keys(kind: MemberKind) -> Vec<String> {
    let mut keys: Vec<String> = [
        "schema",
        "event_id",
        "event_type",
        "create_time_ms",
        "tenant_key",
        "app_id",
        "chat_id",
        "chat_name",
        "chat_i18n_names",
        "chat_i18n_names.zh_cn",
        "chat_i18n_names.en_us",
        "chat_i18n_names.ja_jp",
        "external",
        "operator",
        "operator.open_id",
        "operator.union_id",
        "operator.user_id",
        "operator_tenant_key",
        "received_at_ms",
    ]
    .map(String::from)
    .to_vec();
    if kind.has_users() {
        keys.push("users".into());
    }
    keys.sort();
    keys
}

fn keys_of(v: &Value) -> Vec<String> {
    fn walk(prefix: &str, m: &Map<String, Value>, out: &mut Vec<String>) {
        for (k, v) in m {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if let (Value::Object(inner), true) = (v, prefix.is_empty() && k != "users") {
                walk(&name, inner, out);
            }
            out.push(name);
        }
    }
    let mut out = Vec::new();
    walk("", v.as_object().unwrap(), &mut out);
    out.sort();
    out
}

#[test]
fn the_withdrawal_record_is_byte_for_byte_what_it_was() {
    let e = verified(serde_json::from_str(SEED).unwrap());
    let rec = normalize(&e, MemberKind::UserWithdrawn, 42).unwrap();
    // The expected record of the seed sample, shared with the integration
    // tests; compared as text, so the key order counts too.
    let mut want: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/seed_record.json")).unwrap();
    want["received_at_ms"] = json!(42);
    assert_eq!(
        serde_json::to_string(&rec).unwrap(),
        serde_json::to_string(&want).unwrap()
    );
}

#[test]
fn every_kind_reads_the_same_fields_under_the_same_names() {
    for kind in MemberKind::ALL {
        let event = verified(seed_as(kind));
        let rec = normalize(&event, kind, 7).unwrap();
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(keys_of(&v), expected_keys(kind), "{kind:?}");
        assert_eq!(v["schema"], kind.schema());
        assert_eq!(v["event_type"], kind.event_type());
        assert_eq!(v["chat_id"], "oc_413871888e0d5492e25b173f0812efb7");
        assert_eq!(v["chat_name"], "群名称测试");
        assert_eq!(v["operator"]["user_id"], "e33ggbyz");
        assert_eq!(v["operator_tenant_key"], "879dsyud8");
        assert_eq!(v["external"], false);
        assert_eq!(v["chat_i18n_names"]["ja_jp"], "グループチャット");
        if kind.has_users() {
            assert_eq!(v["users"][0]["name"], "user name");
            assert_eq!(
                v["users"][0]["open_id"],
                "ou_84aad35d084aa403a838cf73ee18467"
            );
        } else {
            assert!(v.get("users").is_none(), "{kind:?} has no users");
        }
        assert_eq!(MemberKind::from_event_type(kind.event_type()), Some(kind));
    }
    assert_eq!(MemberKind::from_event_type("im.message.receive_v1"), None);
}

#[test]
fn absent_fields_are_null_and_extra_fields_tolerated() {
    for kind in MemberKind::ALL {
        let e = verified(
            json!({"schema":"2.0","header":{"event_id":"e","event_type":kind.event_type(),"future":1},
            "event":{"chat_id":"oc_x","brand_new":{"a":[1]},"users":[{"name":"🎉 名"}]}}),
        );
        let v = serde_json::to_value(normalize(&e, kind, 1).unwrap()).unwrap();
        assert_eq!(keys_of(&v), expected_keys(kind), "{kind:?}");
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
        if kind.has_users() {
            assert_eq!(
                v["users"],
                json!([{"name":"🎉 名","tenant_key":null,"open_id":null,"union_id":null,"user_id":null}])
            );
        }
    }
    let e = verified(
        json!({"schema":"2.0","header":{"event_id":"e","event_type":"t"},"event":{"chat_id":"c"}}),
    );
    let rec = normalize(&e, MemberKind::UserAdded, 1).unwrap();
    assert_eq!(serde_json::to_value(rec).unwrap()["users"], json!([]));
    // For the bot events `users` is an unknown field: whatever it holds.
    let e = verified(
        json!({"header":{"event_id":"e","event_type":"t"},"event":{"chat_id":"c","users":"x"}}),
    );
    assert!(normalize(&e, MemberKind::BotAdded, 1).is_ok());
    assert!(normalize(&e, MemberKind::UserAdded, 1).is_err());
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
    for kind in MemberKind::ALL {
        for (env, want) in &cases {
            assert_eq!(
                normalize(&verified(env.clone()), kind, 0).unwrap_err(),
                *want
            );
        }
        for bad in [
            json!({"chat_id": 5}),
            json!({"chat_id":"c","external":"yes"}),
            json!({"chat_id":"c","operator_id":[]}),
        ] {
            let e = verified(json!({"header":{"event_id":"e","event_type":"t"},"event": bad}));
            assert!(matches!(
                normalize(&e, kind, 0),
                Err(NormalizeError::WrongType { part: "event", .. })
            ));
        }
    }
    for bad in [
        json!({"chat_id":"c","users":{}}),
        json!({"chat_id":"c","users":[{"user_id":"x"}]}),
    ] {
        let e = verified(json!({"header":{"event_id":"e","event_type":"t"},"event": bad}));
        assert!(matches!(
            normalize(&e, MemberKind::UserDeleted, 0),
            Err(NormalizeError::WrongType { part: "event", .. })
        ));
    }
}

proptest::proptest! {
    // Any event body, under a well-formed header and any header under a
    // well-formed body: never a panic, and a record always has every key.
    #[test]
    fn normalize_never_panics_and_records_have_every_key(doc in arb_json(), k in 0usize..5) {
        let kind = MemberKind::ALL[k];
        let env = json!({"schema":"2.0","header":{"event_id":"e","event_type":kind.event_type()},"event": doc.clone()});
        if let Some(e) = VerifiedEvent::for_tests(env) {
            if let Ok(rec) = normalize(&e, kind, 0) {
                let v = serde_json::to_value(&rec).unwrap();
                proptest::prop_assert_eq!(keys_of(&v), expected_keys(kind));
                if let Some(users) = v.get("users").and_then(Value::as_array) {
                    for u in users {
                        let mut ks: Vec<_> = u.as_object().unwrap().keys().cloned().collect();
                        ks.sort();
                        proptest::prop_assert_eq!(ks, ["name", "open_id", "tenant_key", "union_id", "user_id"]);
                    }
                }
            }
        }
        if let Some(e) = VerifiedEvent::for_tests(json!({"header": doc, "event": {"chat_id": "c"}})) {
            if let Ok(rec) = normalize(&e, kind, 0) {
                let v = serde_json::to_value(&rec).unwrap();
                proptest::prop_assert_eq!(keys_of(&v), expected_keys(kind));
            }
        }
    }
}

pub(crate) fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
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
                    Just("operator_id".to_string()),
                    Just("i18n_names".to_string()),
                    Just("event_id".to_string()),
                    Just("create_time".to_string()),
                    Just("message".to_string()),
                    Just("tenant_key".to_string()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

mod schemas {
    use super::*;

    #[test]
    fn records_match_their_published_json_schemas() {
        for kind in MemberKind::ALL {
            let v = crate::record::schema_validator(kind.schema());
            let full = verified(seed_as(kind));
            let sparse = verified(
                json!({"header":{"event_id":"e","event_type":kind.event_type()},"event":{"chat_id":"c","users":[{}]}}),
            );
            for e in [full, sparse] {
                let value = serde_json::to_value(normalize(&e, kind, 1).unwrap()).unwrap();
                let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{kind:?}: {errors:?}\n{value}");
            }
            // Strict enough to catch a missing key, or another kind's record.
            assert!(!v.is_valid(&json!({"schema": kind.schema()})));
            for other in MemberKind::ALL.into_iter().filter(|o| *o != kind) {
                let value =
                    serde_json::to_value(normalize(&verified(seed_as(other)), other, 1).unwrap())
                        .unwrap();
                assert!(!v.is_valid(&value), "{kind:?} accepts {other:?}");
            }
        }
    }
}
