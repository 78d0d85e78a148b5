use super::*;
use serde_json::{json, Value};

const SEED: &str = include_str!("../../tests/fixtures/seed_sample.json");
const VECTORS: &str = include_str!("../../tests/vectors/feishu_crypto.json");
/// The seed sample's event type.
const WITHDRAWN_EVENT_TYPE: &str = "im.chat.member.user.withdrawn_v1";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn signed<'a>(ts: &'a str, nonce: &'a str, sig: &'a str) -> SignatureHeaders<'a> {
    SignatureHeaders {
        timestamp: Some(ts),
        nonce: Some(nonce),
        signature: Some(sig),
    }
}

#[test]
fn feishu_documentation_vector() {
    // The example from Feishu's "decrypt" documentation.
    let key = EncryptKey::new("test key");
    assert_eq!(
        key.decrypt("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=")
            .unwrap(),
        b"hello world"
    );
}

#[test]
fn python_cryptography_vectors() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).unwrap();
    assert!(vectors.len() >= 5);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let key = EncryptKey::new(v["encrypt_key"].as_str().unwrap());
        let plain = key.decrypt(v["encrypt"].as_str().unwrap()).unwrap();
        assert_eq!(
            std::str::from_utf8(&plain).unwrap(),
            v["plaintext"].as_str().unwrap(),
            "{name}"
        );
        let body = v["body"].as_str().unwrap().as_bytes();
        let (ts, nonce, sig) = (
            v["timestamp"].as_str().unwrap(),
            v["nonce"].as_str().unwrap(),
            v["signature"].as_str().unwrap(),
        );
        assert_eq!(key.sign(ts, nonce, body), sig, "{name}");
        assert!(key.verify(ts, nonce, body, sig), "{name}");
    }
}

#[test]
fn seed_vector_passes_the_whole_verifier() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).unwrap();
    let v = &vectors[0];
    assert_eq!(v["name"], "seed sample");
    let verifier = Verifier::new(
        Some(&Secret::new("test key")),
        Some(Secret::new("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV")),
        Some(Duration::from_secs(300)),
    );
    let headers = signed(
        v["timestamp"].as_str().unwrap(),
        v["nonce"].as_str().unwrap(),
        v["signature"].as_str().unwrap(),
    );
    match verifier
        .verify(v["body"].as_str().unwrap().as_bytes(), headers, now())
        .unwrap()
    {
        Inbound::Event(e) => {
            assert_eq!(e.event_type(), WITHDRAWN_EVENT_TYPE);
            assert_eq!(e.event_id(), Some("5e3702a84e847582be8db7fb73283c02"));
            assert_eq!(e.schema(), Schema::V2);
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

struct Feishu {
    key: EncryptKey,
    raw_key: &'static str,
}

impl Feishu {
    fn new() -> Self {
        Feishu {
            key: EncryptKey::new("k3y"),
            raw_key: "k3y",
        }
    }
    fn body(&self, envelope: &Value) -> Vec<u8> {
        let enc = self.key.encrypt(envelope.to_string().as_bytes(), [9; 16]);
        json!({ "encrypt": enc }).to_string().into_bytes()
    }
    fn sig(&self, body: &[u8]) -> String {
        self.key.sign("1700000000", "n", body)
    }
    fn verifier(&self) -> Verifier {
        Verifier::new(
            Some(&Secret::new(self.raw_key)),
            Some(Secret::new("tok")),
            Some(Duration::from_secs(300)),
        )
    }
}

fn v2(token: &str) -> Value {
    json!({"schema":"2.0","header":{"event_id":"e1","event_type":WITHDRAWN_EVENT_TYPE,"token":token,"create_time":"1"},"event":{"chat_id":"oc_1"}})
}

#[test]
fn every_rejection_row() {
    let f = Feishu::new();
    let v = f.verifier();
    let body = f.body(&v2("tok"));
    let sig = f.sig(&body);
    let ok = signed("1700000000", "n", &sig);
    assert!(matches!(v.verify(&body, ok, now()), Ok(Inbound::Event(_))));

    let reject = |body: &[u8], h: SignatureHeaders<'_>| v.verify(body, h, now()).unwrap_err();
    assert_eq!(reject(b"{\"encrypt\":", ok), Rejection::MalformedJson);
    assert_eq!(reject(b"[1,2]", ok), Rejection::NotAnObject);
    assert_eq!(reject(b"\xff\xfe", ok), Rejection::MalformedJson);
    assert_eq!(
        reject(br#"{"schema":"2.0"}"#, ok),
        Rejection::PlaintextWithKey
    );

    // Signature problems are found before any decryption.
    assert_eq!(
        reject(&body, signed("1700000000", "n", &"0".repeat(64))),
        Rejection::BadSignature
    );
    assert_eq!(
        reject(
            &body,
            SignatureHeaders {
                timestamp: Some("1700000000"),
                nonce: None,
                signature: Some(&sig)
            }
        ),
        Rejection::MissingSignature
    );
    assert_eq!(
        reject(&body, SignatureHeaders::default()),
        Rejection::Unsigned(Box::new(Rejection::MissingSignature))
    );
    let stale_sig = f.key.sign("1699990000", "n", &body);
    assert_eq!(
        reject(&body, signed("1699990000", "n", &stale_sig)),
        Rejection::StaleTimestamp
    );
    let bad_ts_sig = f.key.sign("soon", "n", &body);
    assert_eq!(
        reject(&body, signed("soon", "n", &bad_ts_sig)),
        Rejection::InvalidTimestamp
    );

    // Decryption problems, with valid signatures so that decryption is reached.
    let with_sig = |b: &[u8]| {
        let s = f.sig(b);
        v.verify(b, signed("1700000000", "n", &s), now())
            .unwrap_err()
    };
    assert_eq!(
        with_sig(br#"{"encrypt":"%%%"}"#),
        Rejection::Undecryptable(DecryptError::BadBase64)
    );
    assert_eq!(
        with_sig(br#"{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAA"}"#),
        Rejection::Undecryptable(DecryptError::BadLength)
    );
    let wrong_key = EncryptKey::new("other").encrypt(v2("tok").to_string().as_bytes(), [3; 16]);
    let r = with_sig(json!({ "encrypt": wrong_key }).to_string().as_bytes());
    assert!(
        matches!(r, Rejection::Undecryptable(_) | Rejection::DecryptedNotJson),
        "{r:?}"
    );
    assert_eq!(
        with_sig(br#"{"encrypt":1}"#),
        Rejection::UnknownEnvelope("encrypt is not a string")
    );

    // Token problems.
    let wrong = f.body(&v2("nope"));
    assert_eq!(with_sig(&wrong), Rejection::WrongToken);
    let no_token = f.body(&json!({"schema":"2.0","header":{"event_type":"x"}}));
    assert_eq!(with_sig(&no_token), Rejection::WrongToken);

    // Unknown envelope shapes.
    let odd = f.body(&json!({"token":"tok","hello":"world"}));
    assert!(matches!(with_sig(&odd), Rejection::UnknownEnvelope(_)));

    for r in [
        Rejection::BadSignature,
        Rejection::WrongToken,
        Rejection::StaleTimestamp,
        Rejection::MissingSignature,
    ] {
        assert!(r.is_auth_failure());
    }
    assert!(!Rejection::MalformedJson.is_auth_failure());
}

#[test]
fn encrypted_body_without_key_is_refused() {
    let v = Verifier::new(None, None, None);
    assert_eq!(
        v.verify(br#"{"encrypt":"abc"}"#, SignatureHeaders::default(), now())
            .unwrap_err(),
        Rejection::EncryptedWithoutKey
    );
}

#[test]
fn challenges_plain_and_encrypted_without_signature() {
    let plain = Verifier::new(None, Some(Secret::new("tok")), None);
    let body = br#"{"challenge":"c-\"1\"","token":"tok","type":"url_verification"}"#;
    match plain
        .verify(body, SignatureHeaders::default(), now())
        .unwrap()
    {
        Inbound::Challenge(c) => assert_eq!(c, "c-\"1\""),
        other => panic!("{other:?}"),
    }
    let bad = br#"{"challenge":"c","token":"bad","type":"url_verification"}"#;
    assert_eq!(
        plain
            .verify(bad, SignatureHeaders::default(), now())
            .unwrap_err(),
        Rejection::WrongToken
    );

    let f = Feishu::new();
    let body = f.body(&json!({"challenge":"xyz","token":"tok","type":"url_verification"}));
    match f
        .verifier()
        .verify(&body, SignatureHeaders::default(), now())
        .unwrap()
    {
        Inbound::Challenge(c) => assert_eq!(c, "xyz"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plaintext_mode_v1_v2_and_other_types() {
    let v = Verifier::new(None, Some(Secret::new("tok")), None);
    let h = SignatureHeaders::default();
    let seed = SEED.replace("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV", "tok");
    let Inbound::Event(e) = v.verify(seed.as_bytes(), h, now()).unwrap() else {
        panic!()
    };
    assert_eq!(e.event_type(), WITHDRAWN_EVENT_TYPE);

    let v1 = br#"{"ts":"1","uuid":"u-1","token":"tok","type":"event_callback","event":{"type":"message"}}"#;
    let Inbound::Event(e) = v.verify(v1, h, now()).unwrap() else {
        panic!()
    };
    assert_eq!(
        (e.schema(), e.event_type(), e.event_id()),
        (Schema::V1, "message", Some("u-1"))
    );

    let redacted = e.redacted_envelope();
    assert_eq!(redacted["token"], "[redacted]");
}

#[test]
fn without_window_old_timestamps_pass() {
    let f = Feishu::new();
    let v = Verifier::new(Some(&Secret::new("k3y")), None, None);
    let body = f.body(&v2("whatever"));
    let sig = f.key.sign("1", "n", &body);
    assert!(v.verify(&body, signed("1", "n", &sig), now()).is_ok());
}

proptest::proptest! {
    #[test]
    fn verifier_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let f = Feishu::new();
        let _ = f.verifier().verify(&body, SignatureHeaders::default(), now());
        let _ = Verifier::new(None, None, None).verify(&body, SignatureHeaders::default(), now());
    }
}

/// With an encrypt key, nothing about what an unsigned body decrypted to
/// reaches the answer: the same text and status for every failure, the
/// cause only in the label and the detail.
/// What can be made of a captured `{"encrypt": ...}` body without the key:
/// its ciphertext, re-wrapped as is, cut, or with one bit flipped.
struct Captured {
    ct: Vec<u8>,
}

impl Captured {
    fn of(body: &[u8]) -> Self {
        use base64::Engine as _;
        let outer: Value = serde_json::from_slice(body).unwrap();
        let text = outer["encrypt"].as_str().unwrap();
        Captured {
            ct: base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        }
    }

    /// A body around any ciphertext bytes.
    fn wrap(bytes: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        json!({ "encrypt": base64::engine::general_purpose::STANDARD.encode(bytes) })
            .to_string()
            .into_bytes()
    }

    /// The body with bit 0 of ciphertext byte `i` flipped.
    fn flip(&self, i: usize) -> Vec<u8> {
        let mut c = self.ct.clone();
        c[i] ^= 1;
        Self::wrap(&c)
    }
}

/// Sends `body` unsigned and asserts the one unsigned refusal, whatever the
/// cause; returns it for its label.
fn refused_unsigned(v: &Verifier, name: &str, body: &[u8]) -> Rejection {
    let r = v
        .verify(body, SignatureHeaders::default(), now())
        .unwrap_err();
    assert!(matches!(r, Rejection::Unsigned(_)), "{name}: {r:?}");
    assert!(r.is_auth_failure(), "{name}");
    assert_eq!(
        r.to_string(),
        Rejection::MissingSignature.to_string(),
        "{name}"
    );
    assert!(r.detail().starts_with("unsigned request: "), "{name}");
    r
}

#[test]
fn unsigned_requests_get_one_answer_whatever_decryption_found() {
    let f = Feishu::new();
    let v = f.verifier();
    let event = f.body(&v2("tok"));
    let captured = Captured::of(&event);
    let (ct, wrap) = (&captured.ct, Captured::wrap);
    let flip = |i: usize| captured.flip(i);
    let n = ct.len();
    let mut prefixed = vec![7u8; 32];
    prefixed.extend_from_slice(&ct[n - 16..]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00not json at all".to_vec()),
        ("event", event.clone()),
        ("flipped IV byte", flip(0)),
        ("flipped byte, second-to-last block", flip(n - 20)),
        ("random prefix before the last block", wrap(&prefixed)),
        ("truncated", wrap(&ct[..n - 16])),
        ("short", wrap(&ct[..8])),
        ("bad base64", br#"{"encrypt":"%%%"}"#.to_vec()),
        (
            "challenge, wrong token",
            f.body(&json!({"challenge":"x","token":"nope","type":"url_verification"})),
        ),
    ];
    let mut labels = std::collections::BTreeSet::new();
    for (name, body) in &cases {
        labels.insert(refused_unsigned(&v, name, body).label());
    }
    // The operator still sees why.
    assert!(labels.len() >= 3, "{labels:?}");
    // And the challenge itself still works unsigned.
    let ok = f.body(&json!({"challenge":"x","token":"tok","type":"url_verification"}));
    assert!(matches!(
        v.verify(&ok, SignatureHeaders::default(), now()),
        Ok(Inbound::Challenge(_))
    ));
}

/// Key and token rotation: the previous values next to the current ones.
mod rotation;
