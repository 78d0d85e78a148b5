//! Secrets never reach logs, metrics or answers: a run with a known encrypt
//! key and token, full of failures, is searched for them; and a panic
//! carrying a secret in its message is logged without it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_metrics_and_answers() {
    // Kafka unreachable as well: failures of every kind in one run.
    let dead = format!("127.0.0.1:{}", free_port());
    let bridge = Bridge::spawn(
        &dead,
        "withdrawn.secrets",
        &[
            ("BRIDGE_PUBLISH_DEADLINE_MS", "300"),
            ("BRIDGE_LOG", "debug"),
            ("KAFKA_PROPERTIES", "sasl.password=kafka-s3cret-pw"),
        ],
    );
    let feishu = Feishu::new();
    let mut bodies = Vec::new();
    let mut wrong_token = withdrawal("s-1", "oc_s");
    wrong_token["header"]["token"] = "nope".into();
    for env in [
        withdrawal("s-2", "oc_s"),
        wrong_token,
        json!({"challenge": "c", "token": TOKEN, "type": "url_verification"}),
    ] {
        bodies.push(feishu.push(&bridge, &env).await.body);
    }
    let (body, headers) = feishu.sign(&withdrawal("s-3", "oc_s"));
    bodies.push(
        feishu
            .post(
                &bridge,
                body.clone(),
                &[
                    headers[0].clone(),
                    headers[1].clone(),
                    ("X-Lark-Signature", "00".repeat(32)),
                ],
            )
            .await
            .body,
    );
    bodies.push(feishu.post(&bridge, body, &[]).await.body);
    let other = feishu_kafka_bridge::protocol::EncryptKey::new("other key");
    let bad = json!({"encrypt": other.encrypt(TOKEN.as_bytes(), [0; 16])})
        .to_string()
        .into_bytes();
    let sig = feishu.key.sign(&headers[0].1, "n", &bad);
    bodies.push(
        feishu
            .post(
                &bridge,
                bad,
                &[
                    headers[0].clone(),
                    ("X-Lark-Request-Nonce", "n".into()),
                    ("X-Lark-Signature", sig),
                ],
            )
            .await
            .body,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = bridge.metrics().await;
    let logs = bridge.log_text();
    assert!(
        logs.contains("bad_signature") && logs.contains("wrong_token"),
        "the run did not exercise failures"
    );
    for secret in [ENCRYPT_KEY, TOKEN, "kafka-s3cret-pw"] {
        assert!(!logs.contains(secret), "{secret} in logs");
        assert!(!metrics.contains(secret), "{secret} in metrics");
        for b in &bodies {
            assert!(!b.contains(secret), "{secret} in an answer: {b}");
        }
    }
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_is_logged_without_its_formatted_message() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        feishu_kafka_bridge::install_panic_hook();
        let r = std::panic::catch_unwind(|| {
            panic!("decrypted {} with {}", "plaintext-payload", ENCRYPT_KEY)
        });
        assert!(r.is_err());
        let r = std::panic::catch_unwind(|| panic!("a literal message"));
        assert!(r.is_err());
    });
    let _ = std::panic::take_hook();
    let logged = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("panicked") && logged.contains("secrets.rs"),
        "{logged}"
    );
    assert!(logged.contains("a literal message"), "{logged}");
    assert!(
        !logged.contains(ENCRYPT_KEY) && !logged.contains("plaintext-payload"),
        "{logged}"
    );
}
