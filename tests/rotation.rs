//! Key rotation without 401s (issue 23), end to end: the real binary and a
//! real tansu broker. With the new Encrypt Key and Verification Token
//! current and the old ones previous (all given as files, the way a
//! Kubernetes Secret volume gives them), events signed and encrypted with
//! either are published, and the metric says which matched; once the
//! rotation is over (the previous settings gone, or their files missing or
//! empty), the old key gets the uniform 401 and nothing more is published.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const NEW_KEY: &str = "rotation-new-encrypt-key";
const OLD_KEY: &str = "rotation-old-encrypt-key";
const NEW_TOKEN: &str = "rotation-new-verification-token";
const OLD_TOKEN: &str = "rotation-old-verification-token";
const SETTLE: Duration = Duration::from_millis(1500);
const CHAT: &str = "oc_rotation";

/// A withdrawal carrying `token`.
fn event(event_id: &str, token: &str) -> Value {
    let mut v = withdrawal(event_id, CHAT);
    v["header"]["token"] = token.into();
    v
}

fn matched(metrics: &str, secret: &str, slot: &str) -> f64 {
    metric(
        metrics,
        &format!("feishu_bridge_secret_matched_total{{secret=\"{secret}\",slot=\"{slot}\"}}"),
    )
}

/// A directory for the secret files, removed on drop.
struct SecretDir(PathBuf);

impl SecretDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fkb-rotation-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        SecretDir(dir)
    }
    /// Writes a secret file as a Secret volume holds it (trailing newline).
    fn write(&self, name: &str, value: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path_str(&path)
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn assert_no_secret_in(text: &str, what: &str) {
    for secret in [NEW_KEY, OLD_KEY, NEW_TOKEN, OLD_TOKEN] {
        assert!(!text.contains(secret), "{secret} in the {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_secrets_both_publish_during_a_rotation_and_only_the_new_after() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "rotation");
    let dir = SecretDir::new();
    let key_file = dir.write("encrypt-key", NEW_KEY);
    let token_file = dir.write("verification-token", NEW_TOKEN);
    let previous_key_file = dir.write("encrypt-key-previous", OLD_KEY);
    let previous_token_file = dir.write("verification-token-previous", OLD_TOKEN);
    let base: Vec<(&str, &str)> = vec![
        ("BRIDGE_LISTEN", "127.0.0.1:0"),
        ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("KAFKA_BROKERS", &broker.bootstrap),
        ("KAFKA_TOPIC", &topic),
        ("FEISHU_ENCRYPT_KEY_FILE", &key_file),
        ("FEISHU_VERIFICATION_TOKEN_FILE", &token_file),
        ("BRIDGE_LOG_FORMAT", "json"),
        ("BRIDGE_READINESS_INTERVAL_MS", "300"),
    ];
    let mut rotating = base.clone();
    rotating.extend([
        (
            "FEISHU_ENCRYPT_KEY_PREVIOUS_FILE",
            previous_key_file.as_str(),
        ),
        (
            "FEISHU_VERIFICATION_TOKEN_PREVIOUS_FILE",
            previous_token_file.as_str(),
        ),
    ]);
    let (old, new) = (Feishu::with_key(OLD_KEY), Feishu::with_key(NEW_KEY));

    // During the rotation: both are published.
    let bridge = Bridge::spawn_with_env(&rotating);
    bridge.wait_ready(Duration::from_secs(30));
    let m = bridge.metrics().await;
    for secret in ["encrypt_key", "verification_token"] {
        for slot in ["current", "previous"] {
            let series = format!(
                "feishu_bridge_secret_matched_total{{secret=\"{secret}\",slot=\"{slot}\"}} 0"
            );
            assert!(m.contains(&series), "{series} missing at start-up:\n{m}");
        }
    }
    let reply = old.push(&bridge, &event("rot-old", OLD_TOKEN)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"msg":"success"}"#)
    );
    let reply = new.push(&bridge, &event("rot-new", NEW_TOKEN)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"msg":"success"}"#)
    );

    let records = read_topic(&broker.bootstrap, &topic, 2, SETTLE);
    let mut ids: Vec<&str> = records
        .iter()
        .map(|r| r.headers["event_id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["rot-new", "rot-old"], "{records:?}");
    for r in &records {
        assert_no_secret_in(&r.value.to_string(), "record");
    }

    let m = bridge.metrics().await;
    for secret in ["encrypt_key", "verification_token"] {
        assert_eq!(matched(&m, secret, "current"), 1.0, "{secret}:\n{m}");
        assert_eq!(matched(&m, secret, "previous"), 1.0, "{secret}:\n{m}");
    }
    assert_eq!(webhook_outcome(&m, "published"), 2.0);

    // Feishu's console re-checks the URL with an unsigned challenge, which
    // may still be encrypted with the old key.
    let (body, _) =
        old.sign(&json!({"challenge": "rot-c", "token": OLD_TOKEN, "type": "url_verification"}));
    let reply = old.post(&bridge, body, &[]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"challenge":"rot-c"}"#)
    );
    let m = bridge.metrics().await;
    assert_eq!(matched(&m, "encrypt_key", "previous"), 2.0, "{m}");
    assert_eq!(matched(&m, "verification_token", "previous"), 2.0, "{m}");

    // The operator is told once per secret, by setting name, never value.
    let logs = bridge.log_text();
    for setting in [
        "FEISHU_ENCRYPT_KEY_PREVIOUS",
        "FEISHU_VERIFICATION_TOKEN_PREVIOUS",
    ] {
        let told = logs
            .lines()
            .filter(|l| l.contains("matched the previous value") && l.contains(setting))
            .filter(|l| l.contains(&format!("\"setting\":\"{setting}\"")))
            .count();
        assert_eq!(told, 1, "{setting}:\n{logs}");
    }
    assert_no_secret_in(&logs, "logs");
    assert_no_secret_in(&m, "metrics");
    assert!(bridge.terminate(Duration::from_secs(20)).success());

    // The rotation is over: the previous settings are gone.
    let bridge = Bridge::spawn_with_env(&base);
    bridge.wait_ready(Duration::from_secs(30));
    let (body, headers) = new.sign(&event("rot-bad-sig", NEW_TOKEN));
    let mut forged = headers.clone();
    forged[2].1 = "0".repeat(64);
    let bad_signature = new.post(&bridge, body, &forged).await;
    assert_eq!(bad_signature.status, 401);
    let reply = old.push(&bridge, &event("rot-old-after", OLD_TOKEN)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (401, bad_signature.body.as_str()),
        "the old key gets exactly a bad signature's answer"
    );
    let m = bridge.metrics().await;
    assert_eq!(webhook_outcome(&m, "rejected_bad_signature"), 2.0, "{m}");
    assert_eq!(matched(&m, "encrypt_key", "current"), 0.0);
    assert!(!m.contains("slot=\"previous\""), "{m}");
    assert!(bridge.terminate(Duration::from_secs(20)).success());

    // Over, the Kubernetes way: the settings stay, the Secret's keys are
    // emptied or removed. Same answer.
    std::fs::write(&previous_key_file, "").unwrap();
    std::fs::remove_file(&previous_token_file).unwrap();
    let bridge = Bridge::spawn_with_env(&rotating);
    bridge.wait_ready(Duration::from_secs(30));
    let reply = old
        .push(&bridge, &event("rot-old-emptied", OLD_TOKEN))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (401, bad_signature.body.as_str())
    );
    // The new key with the old token: the token's rotation is over too.
    let reply = new.push(&bridge, &event("rot-old-token", OLD_TOKEN)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let m = bridge.metrics().await;
    assert!(!m.contains("slot=\"previous\""), "{m}");
    assert_eq!(webhook_outcome(&m, "rejected_bad_signature"), 1.0, "{m}");
    assert_eq!(webhook_outcome(&m, "rejected_wrong_token"), 1.0, "{m}");
    drop(bridge);

    // Nothing more was published.
    let records = read_topic(&broker.bootstrap, &topic, 2, SETTLE);
    assert_eq!(records.len(), 2, "{records:?}");
}

#[test]
fn a_previous_secret_without_a_current_one_stops_start_up() {
    let dir = SecretDir::new();
    let previous = dir.write("encrypt-key-previous", OLD_KEY);
    for (setting, value) in [
        ("FEISHU_ENCRYPT_KEY_PREVIOUS_FILE", previous.as_str()),
        ("FEISHU_VERIFICATION_TOKEN_PREVIOUS", OLD_TOKEN),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"))
            .env_clear()
            .envs([("KAFKA_BROKERS", "127.0.0.1:1"), (setting, value)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("invalid setting {setting}:")),
            "{err}"
        );
        assert_no_secret_in(&err, "error");
    }
}

/// Replaces a secret file in one step, as the kubelet does when a Secret
/// changes (it swaps the volume's data directory).
fn replace_file(path: &str, value: &str) {
    let staged = format!("{path}.staged");
    std::fs::write(&staged, format!("{value}\n")).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_edited_while_running_apply_without_a_restart() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "rotation-reload");
    let dir = SecretDir::new();
    let key_file = dir.write("encrypt-key", OLD_KEY);
    let token_file = dir.write("verification-token", OLD_TOKEN);
    // Not there yet: a Secret without these keys.
    let previous_key_file = path_str(&dir.0.join("encrypt-key-previous"));
    let previous_token_file = path_str(&dir.0.join("verification-token-previous"));
    let bridge = Bridge::spawn_with_env(&[
        ("BRIDGE_LISTEN", "127.0.0.1:0"),
        ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("KAFKA_BROKERS", &broker.bootstrap),
        ("KAFKA_TOPIC", &topic),
        ("FEISHU_ENCRYPT_KEY_FILE", &key_file),
        ("FEISHU_VERIFICATION_TOKEN_FILE", &token_file),
        ("FEISHU_ENCRYPT_KEY_PREVIOUS_FILE", &previous_key_file),
        (
            "FEISHU_VERIFICATION_TOKEN_PREVIOUS_FILE",
            &previous_token_file,
        ),
        ("FEISHU_SECRET_RELOAD_INTERVAL_MS", "200"),
        ("BRIDGE_LOG_FORMAT", "json"),
        ("BRIDGE_READINESS_INTERVAL_MS", "300"),
    ]);
    bridge.wait_ready(Duration::from_secs(30));
    let (old, new) = (Feishu::with_key(OLD_KEY), Feishu::with_key(NEW_KEY));
    let mut published = 0;
    let reply = old.push(&bridge, &event("reload-old-0", OLD_TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    published += 1;

    // The console's reset: the new values current, the old ones previous.
    for (path, value) in [
        (&previous_key_file, OLD_KEY),
        (&previous_token_file, OLD_TOKEN),
        (&key_file, NEW_KEY),
        (&token_file, NEW_TOKEN),
    ] {
        replace_file(path, value);
    }
    let changed = std::time::Instant::now();
    // Deliveries with the old key keep coming (and keep being published)
    // while the new key's first ones wait for the next look at the files.
    let mut new_refused = 0;
    for i in 1.. {
        let reply = old
            .push(&bridge, &event(&format!("reload-old-{i}"), OLD_TOKEN))
            .await;
        assert_eq!(
            reply.status, 200,
            "the old key was refused during the reload: {}",
            reply.body
        );
        published += 1;
        let reply = new
            .push(&bridge, &event(&format!("reload-new-{i}"), NEW_TOKEN))
            .await;
        if reply.status == 200 {
            published += 1;
            break;
        }
        assert_eq!(reply.status, 401, "{}", reply.body);
        new_refused += 1;
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "the new key was not applied within 10 s of the files changing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied_after = changed.elapsed();
    // Applied: the old key is now the previous one, still published.
    let reply = old
        .push(&bridge, &event("reload-old-after", OLD_TOKEN))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    published += 1;
    let m = bridge.metrics().await;
    let reloads = |m: &str, outcome: &str| {
        metric(
            m,
            &format!("feishu_bridge_secret_reloads_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert!(reloads(&m, "applied") >= 1.0, "{m}");
    assert_eq!(reloads(&m, "failed"), 0.0, "{m}");
    assert!(matched(&m, "encrypt_key", "previous") >= 1.0, "{m}");
    assert_eq!(
        matched(&m, "encrypt_key", "current") + matched(&m, "encrypt_key", "previous"),
        published as f64,
        "{m}"
    );
    eprintln!(
        "reload: the new key was applied {applied_after:?} after the files changed ({new_refused} refused before)"
    );

    // A broken edit (the current key emptied): nothing changes, and the
    // operator is told why.
    replace_file(&key_file, "");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let reply = new
        .push(&bridge, &event("reload-new-kept", NEW_TOKEN))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    published += 1;
    let reply = old
        .push(&bridge, &event("reload-old-kept", OLD_TOKEN))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    published += 1;
    let m = bridge.metrics().await;
    assert_eq!(reloads(&m, "failed"), 1.0, "told once: {m}");
    assert_eq!(
        metric(&m, "feishu_bridge_secret_reload_failing"),
        1.0,
        "{m}"
    );
    assert_eq!(
        reqwest::blocking_get(&bridge.admin_url("/readyz")).unwrap(),
        200,
        "readiness stays"
    );
    let logs = bridge.log_text();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("cannot be used") && l.contains("FEISHU_ENCRYPT_KEY"))
            .count(),
        1,
        "{logs}"
    );
    // Fixed again: the files hold the running secrets.
    replace_file(&key_file, NEW_KEY);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let m = bridge.metrics().await;
    assert_eq!(
        metric(&m, "feishu_bridge_secret_reload_failing"),
        0.0,
        "{m}"
    );
    assert_no_secret_in(&bridge.log_text(), "logs");
    assert_no_secret_in(&m, "metrics");
    assert!(bridge.terminate(Duration::from_secs(20)).success());

    let records = read_topic(&broker.bootstrap, &topic, published, SETTLE);
    assert_eq!(records.len(), published, "{records:?}");
}
