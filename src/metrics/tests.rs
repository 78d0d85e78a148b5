use super::*;

#[test]
fn every_rejection_label_is_a_known_reason() {
    use crate::protocol::{DecryptError, Rejection};
    let inner = Rejection::WrongToken;
    let all = [
        Rejection::MalformedJson,
        Rejection::NotAnObject,
        Rejection::Undecryptable(DecryptError::BadBase64),
        Rejection::Undecryptable(DecryptError::BadLength),
        Rejection::Undecryptable(DecryptError::NoPlaintext),
        Rejection::DecryptedNotJson,
        Rejection::EncryptedWithoutKey,
        Rejection::PlaintextWithKey,
        Rejection::UnknownEnvelope("x"),
        Rejection::MissingSignature,
        Rejection::BadSignature,
        Rejection::InvalidTimestamp,
        Rejection::StaleTimestamp,
        Rejection::WrongToken,
        Rejection::Unsigned(Box::new(inner)),
    ];
    for r in all {
        assert!(REJECTION_REASONS.contains(&r.label()), "{}", r.label());
    }
}

#[test]
fn metrics_render() {
    let m = Metrics::new();
    m.count_rejected(Ingress::Webhook, "bad_signature");
    m.count_ignored(Ingress::Webhook, "im.message.receive_v1");
    m.count_ignored(Ingress::LongConnection, "<script>");
    m.register_event_types(["im.chat.member.user.added_v1"]);
    m.count_event(
        Ingress::Webhook,
        "im.message.receive_v1",
        outcome::PUBLISHED,
    );
    let text = m.render();
    for needle in [
        "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"rejected_bad_signature\"} 1",
        "feishu_bridge_requests_total{ingress=\"long_connection\",outcome=\"published\"} 0",
        "feishu_bridge_ignored_events_total{event_type=\"other\",ingress=\"long_connection\"} 1",
        "feishu_bridge_ignored_events_total{event_type=\"im.message.receive_v1\",ingress=\"webhook\"} 1",
        "feishu_bridge_long_connection_reconnects_total{reason=\"ping_timeout\"} 0",
        "feishu_bridge_long_connection_connected 0",
        "feishu_bridge_request_duration_seconds_bucket",
        "feishu_bridge_build_info{version=",
        "feishu_bridge_dedup_ids_learned_total{source=\"warm_start\"} 0",
        "feishu_bridge_dedup_follower_lag_seconds{destination=\"dead_letter\"} 0",
        "feishu_bridge_dedup_follower_delay_seconds_bucket",
        "feishu_bridge_events_total{event_type=\"im.chat.member.user.added_v1\",ingress=\"long_connection\",outcome=\"dead_lettered\"} 0",
        "feishu_bridge_events_total{event_type=\"im.message.receive_v1\",ingress=\"webhook\",outcome=\"published\"} 1",
        "feishu_bridge_publish_duration_seconds_count{destination=\"raw\"} 0",
        "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"rejected_wrong_token\"} 0",
        "feishu_bridge_requests_total{ingress=\"long_connection\",outcome=\"rejected_body_too_large\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// The text of `feishu_bridge_secret_matched_total` for one secret and slot.
fn secret_series(secret: &str, slot: &str) -> String {
    format!("feishu_bridge_secret_matched_total{{secret=\"{secret}\",slot=\"{slot}\"}}")
}

/// Asserts the series for `secret`/`slot` is rendered with the value `n`.
fn assert_series(text: &str, secret: &str, slot: &str, n: u64) {
    let line = format!("{} {n}", secret_series(secret, slot));
    assert!(text.contains(&line), "missing {line} in\n{text}");
}

#[test]
fn secret_matched_series_exist_only_for_configured_values() {
    use crate::protocol::{Matched, Slot, Verifier};
    use crate::secret::Secret;

    let m = Metrics::new();
    assert!(!m.render().contains("secret_matched_total"));
    let key = Secret::new("k");
    let rotating = Verifier::new(Some(&key), Some(Secret::new("t")), None)
        .with_previous(Some(&Secret::new("old")), None);
    m.register_secret_slots(rotating.configured());
    m.register_secret_slots(rotating.configured());
    let text = m.render();
    assert_series(&text, "encrypt_key", "current", 0);
    assert_series(&text, "encrypt_key", "previous", 0);
    assert_series(&text, "verification_token", "current", 0);
    assert!(
        !text.contains(&secret_series("verification_token", "previous")),
        "{text}"
    );

    m.secret_matched.count(Matched {
        encrypt_key: Some(Slot::Previous),
        verification_token: Some(Slot::Current),
    });
    m.secret_matched.count(Matched {
        encrypt_key: Some(Slot::Current),
        verification_token: Some(Slot::Current),
    });
    m.secret_matched.count(Matched::default());
    let text = m.render();
    assert_series(&text, "encrypt_key", "current", 1);
    assert_series(&text, "encrypt_key", "previous", 1);
    assert_series(&text, "verification_token", "current", 2);
    assert_eq!(
        text.matches("# TYPE feishu_bridge_secret_matched_total counter")
            .count(),
        1
    );

    // Plaintext mode without a token: no series at all.
    let none = Metrics::new();
    none.register_secret_slots(Verifier::new(None, None, None).configured());
    assert!(!none.render().contains("secret_matched_total"));
}
