//! Rotation: a previous encrypt key and token accepted next to the current
//! ones, told apart in [`Matched`], and no new oracle.

use super::*;

/// Plays Feishu with a given encrypt key: the body and its signature
/// headers' values (timestamp "1700000000", nonce "n").
fn sealed(key: &str, envelope: &Value) -> (Vec<u8>, String) {
    let key = EncryptKey::new(key);
    let body = json!({ "encrypt": key.encrypt(envelope.to_string().as_bytes(), [5; 16]) })
        .to_string()
        .into_bytes();
    let sig = key.sign("1700000000", "n", &body);
    (body, sig)
}

/// During a rotation: the new key and token current, the old ones previous.
fn rotating() -> Verifier {
    Verifier::new(
        Some(&Secret::new("new key")),
        Some(Secret::new("new tok")),
        Some(Duration::from_secs(300)),
    )
    .with_previous(Some(&Secret::new("old key")), Some(Secret::new("old tok")))
}

fn matched(encrypt_key: Option<Slot>, verification_token: Option<Slot>) -> Matched {
    Matched {
        encrypt_key,
        verification_token,
    }
}

#[test]
fn during_a_rotation_old_and_new_keys_and_tokens_are_accepted_and_told_apart() {
    use Slot::{Current, Previous};
    let v = rotating();
    for (key, token, want) in [
        ("new key", "new tok", matched(Some(Current), Some(Current))),
        (
            "old key",
            "old tok",
            matched(Some(Previous), Some(Previous)),
        ),
        // Feishu's console rotates each secret on its own.
        ("new key", "old tok", matched(Some(Current), Some(Previous))),
        ("old key", "new tok", matched(Some(Previous), Some(Current))),
    ] {
        let (body, sig) = sealed(key, &v2(token));
        let (inbound, got) = v
            .verify_matched(&body, signed("1700000000", "n", &sig), now())
            .unwrap_or_else(|r| panic!("{key}/{token}: {r:?}"));
        let Inbound::Event(e) = inbound else {
            panic!("{key}/{token}: {inbound:?}")
        };
        assert_eq!(e.event_id(), Some("e1"), "{key}/{token}");
        assert_eq!(got, want, "{key}/{token}");
        // `verify` is the same check without the slots.
        assert!(matches!(
            v.verify(&body, signed("1700000000", "n", &sig), now()),
            Ok(Inbound::Event(_))
        ));
    }
    assert_eq!(
        v.configured(),
        Configured {
            encrypt_key: &[Current, Previous],
            verification_token: &[Current, Previous],
        }
    );
}

#[test]
fn the_key_that_signed_is_the_key_that_decrypts() {
    // Encrypted with the new key, signed with the old one: authentic, but the
    // old key does not decrypt it, and the new one is not tried (a signed
    // request's decryption failure is a 400, never a second guess).
    let v = rotating();
    let new = EncryptKey::new("new key");
    let body = json!({ "encrypt": new.encrypt(v2("new tok").to_string().as_bytes(), [5; 16]) })
        .to_string()
        .into_bytes();
    let sig = EncryptKey::new("old key").sign("1700000000", "n", &body);
    let r = v
        .verify(&body, signed("1700000000", "n", &sig), now())
        .unwrap_err();
    assert!(
        matches!(r, Rejection::Undecryptable(_) | Rejection::DecryptedNotJson),
        "{r:?}"
    );
    assert!(!r.is_auth_failure());
    // The timestamp window applies whichever key signed.
    let (body, _) = sealed("old key", &v2("old tok"));
    let stale = EncryptKey::new("old key").sign("1699990000", "n", &body);
    assert_eq!(
        v.verify(&body, signed("1699990000", "n", &stale), now())
            .unwrap_err(),
        Rejection::StaleTimestamp
    );
}

#[test]
fn a_key_no_longer_configured_gets_the_same_401_as_any_bad_signature() {
    let (old_body, old_sig) = sealed("old key", &v2("old tok"));
    let (new_body, _) = sealed("new key", &v2("new tok"));
    let after = Verifier::new(
        Some(&Secret::new("new key")),
        Some(Secret::new("new tok")),
        Some(Duration::from_secs(300)),
    );
    let bad = after
        .verify(&new_body, signed("1700000000", "n", &"0".repeat(64)), now())
        .unwrap_err();
    assert_eq!(bad, Rejection::BadSignature);
    for (name, v) in [
        ("rotation over", after.clone()),
        // Neither of two configured keys: the same answer.
        (
            "another rotation",
            after
                .clone()
                .with_previous(Some(&Secret::new("other key")), None),
        ),
    ] {
        let r = v
            .verify(&old_body, signed("1700000000", "n", &old_sig), now())
            .unwrap_err();
        assert_eq!(r, bad, "{name}");
        assert_eq!(
            (r.label(), r.to_string(), r.is_auth_failure()),
            (bad.label(), bad.to_string(), bad.is_auth_failure()),
            "{name}"
        );
    }
    // The old token alone is refused as any wrong token.
    let (body, sig) = sealed("new key", &v2("old tok"));
    assert_eq!(
        after
            .verify(&body, signed("1700000000", "n", &sig), now())
            .unwrap_err(),
        Rejection::WrongToken
    );
    // Unsigned, the old key's challenge gets the uniform unsigned answer.
    let (challenge, _) = sealed(
        "old key",
        &json!({"challenge":"c","token":"new tok","type":"url_verification"}),
    );
    let r = after
        .verify(&challenge, SignatureHeaders::default(), now())
        .unwrap_err();
    assert!(matches!(r, Rejection::Unsigned(_)), "{r:?}");
    assert_eq!(r.to_string(), Rejection::MissingSignature.to_string());
}

#[test]
fn a_challenge_encrypted_with_the_previous_key_is_answered() {
    use Slot::{Current, Previous};
    let v = rotating();
    for (key, token, want) in [
        (
            "old key",
            "old tok",
            matched(Some(Previous), Some(Previous)),
        ),
        ("old key", "new tok", matched(Some(Previous), Some(Current))),
        ("new key", "new tok", matched(Some(Current), Some(Current))),
    ] {
        let (body, _) = sealed(
            key,
            &json!({"challenge":"xyz","token":token,"type":"url_verification"}),
        );
        match v.verify_matched(&body, SignatureHeaders::default(), now()) {
            Ok((Inbound::Challenge(c), got)) => {
                assert_eq!(c, "xyz");
                assert_eq!(got, want, "{key}/{token}");
            }
            other => panic!("{key}/{token}: {other:?}"),
        }
    }
    // Neither key, or a wrong token: the one unsigned answer.
    for (key, token) in [("third key", "new tok"), ("old key", "nope")] {
        let (body, _) = sealed(
            key,
            &json!({"challenge":"xyz","token":token,"type":"url_verification"}),
        );
        let r = v
            .verify(&body, SignatureHeaders::default(), now())
            .unwrap_err();
        assert!(matches!(r, Rejection::Unsigned(_)), "{key}/{token}: {r:?}");
    }
    // An unsigned event is refused whichever key decrypts it.
    let (body, _) = sealed("old key", &v2("old tok"));
    assert_eq!(
        v.verify(&body, SignatureHeaders::default(), now())
            .unwrap_err(),
        Rejection::Unsigned(Box::new(Rejection::MissingSignature))
    );
}

#[test]
fn the_previous_token_is_accepted_in_plaintext_mode_too() {
    let v = Verifier::new(None, Some(Secret::new("new tok")), None)
        .with_previous(None, Some(Secret::new("old tok")));
    let h = SignatureHeaders::default();
    for (token, slot) in [("new tok", Slot::Current), ("old tok", Slot::Previous)] {
        let body = v2(token).to_string();
        let (inbound, got) = v.verify_matched(body.as_bytes(), h, now()).unwrap();
        assert!(matches!(inbound, Inbound::Event(_)));
        assert_eq!(got, matched(None, Some(slot)));
        let challenge = json!({"challenge":"c","token":token,"type":"url_verification"});
        let (inbound, got) = v
            .verify_matched(challenge.to_string().as_bytes(), h, now())
            .unwrap();
        assert!(matches!(inbound, Inbound::Challenge(_)));
        assert_eq!(got, matched(None, Some(slot)));
    }
    for token in ["nope", "old to", "old tok ", ""] {
        assert_eq!(
            v.verify(v2(token).to_string().as_bytes(), h, now())
                .unwrap_err(),
            Rejection::WrongToken,
            "{token:?}"
        );
    }
    // Without a token configured nothing is checked, so nothing matched.
    let open = Verifier::new(None, None, None);
    let (_, got) = open
        .verify_matched(v2("any").to_string().as_bytes(), h, now())
        .unwrap();
    assert_eq!(got, Matched::default());
}

#[test]
fn a_previous_value_without_a_current_one_changes_nothing() {
    // The settings refuse it; the verifier must not let it switch a check on.
    let v = Verifier::new(None, None, None)
        .with_previous(Some(&Secret::new("old key")), Some(Secret::new("old tok")));
    assert_eq!(
        v.configured(),
        Configured {
            encrypt_key: &[],
            verification_token: &[],
        }
    );
    let (body, sig) = sealed("old key", &v2("old tok"));
    assert_eq!(
        v.verify(&body, signed("1700000000", "n", &sig), now())
            .unwrap_err(),
        Rejection::EncryptedWithoutKey
    );
    let f = Feishu::new();
    assert_eq!(
        f.verifier().configured(),
        Configured {
            encrypt_key: &[Slot::Current],
            verification_token: &[Slot::Current],
        }
    );
}

/// The padding-oracle reasoning holds with two keys: whatever an unsigned
/// body encrypted with the previous key decrypts to, the answer is the one
/// unsigned refusal.
#[test]
fn unsigned_requests_get_one_answer_with_the_previous_key_too() {
    let v = rotating();
    let (event, _) = sealed("old key", &v2("old tok"));
    let captured = Captured::of(&event);
    let n = captured.ct.len();
    let (wrong_token, _) = sealed(
        "old key",
        &json!({"challenge":"x","token":"nope","type":"url_verification"}),
    );
    for (name, body) in [
        ("event", event.clone()),
        ("flipped IV byte", captured.flip(0)),
        ("flipped byte, second-to-last block", captured.flip(n - 20)),
        ("truncated", Captured::wrap(&captured.ct[..n - 16])),
        ("challenge, wrong token", wrong_token),
    ] {
        refused_unsigned(&v, name, &body);
    }
}

proptest::proptest! {
    #[test]
    fn rotating_verifier_never_panics_and_agrees_with_verify(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let v = rotating();
        let h = SignatureHeaders::default();
        let matched = v.verify_matched(&body, h, now()).map(|(i, _)| format!("{i:?}"));
        proptest::prop_assert_eq!(matched, v.verify(&body, h, now()).map(|i| format!("{i:?}")));
    }
}
