//! The chart's Deployment runs: the chart rendered by Helm's own engine
//! (tests/deploy/render_pod.py), the real binary started with the rendered
//! container's environment (ConfigMap and env, as the kubelet assembles it)
//! and the rendered Secret's files laid out under a temporary directory as
//! the volume mount would, against a real broker. Its readiness probe must
//! turn 200, and an event pushed to the rendered callback path must arrive.
//!
//! Two things differ from a pod, on purpose: the mount path is prefixed
//! with the temporary directory, and the two listen addresses keep their
//! meaning but take port 0 on loopback (the test must not depend on 8080
//! and 9090 being free).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn render_pod(values: &Value) -> Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/deploy/render_pod.py"
        ))
        .arg(values.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "rendering the chart failed (pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("render_pod.py prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_deployment_runs_the_binary_to_ready() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "chart");
    let pod = render_pod(&json!({
        "config": {
            "kafkaBrokers": broker.bootstrap,
            "kafkaTopic": topic,
            "kafkaDlqTopic": dlq,
        },
        "secrets": {
            "encryptKey": ENCRYPT_KEY,
            "verificationToken": TOKEN,
            "kafkaProperties": "client.id=from-the-chart-secret\n",
        },
    }));

    // The Secret volume: every rendered key a file under the mount path.
    let root = TempDir(std::env::temp_dir().join(format!("fkb-chart-{}", std::process::id())));
    let under_root = |path: &str| -> String {
        let relative = Path::new(path).strip_prefix("/").unwrap_or(Path::new(path));
        root.0.join(relative).to_string_lossy().into_owned()
    };
    let files = pod["files"].as_object().expect("files");
    assert!(!files.is_empty(), "{pod}");
    for (path, content) in files {
        let at = PathBuf::from(under_root(path));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, content.as_str().unwrap()).unwrap();
    }
    let mount = Path::new(files.keys().next().unwrap())
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let declared: Vec<i64> = pod["ports"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_i64)
        .collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for (name, value) in pod["env"].as_object().expect("env") {
        let value = value.as_str().unwrap().to_owned();
        let value = if name.ends_with("_LISTEN") {
            let port = value.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
            assert!(
                declared.contains(&port.parse().unwrap()),
                "{name}={value} is not a container port: {pod}"
            );
            "127.0.0.1:0".to_owned()
        } else if value.starts_with(&mount) {
            // A file of the Secret, present or not (a key the Secret does
            // not have is a missing file in the pod too).
            under_root(&value)
        } else {
            value
        };
        env.push((name.clone(), value));
    }
    // Faster readiness checks than the default; nothing else is changed.
    env.push(("BRIDGE_READINESS_INTERVAL_MS".into(), "300".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let bridge = Bridge::spawn_with_env(&env);
    let readiness = pod["readiness"]["path"].as_str().unwrap();
    assert_eq!(pod["readiness"]["port"], "admin");
    bridge.wait_ready(Duration::from_secs(60));
    let ready = reqwest::get(bridge.admin_url(readiness)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let liveness = pod["liveness"]["path"].as_str().unwrap();
    assert_eq!(
        reqwest::get(bridge.admin_url(liveness))
            .await
            .unwrap()
            .status(),
        200
    );

    // The secrets came from the files: a signed, encrypted event arrives.
    let path = pod["env"]["BRIDGE_EVENT_PATH"].as_str().unwrap();
    let (body, headers) = Feishu::new().sign(&withdrawal("chart-1", "oc_chart"));
    let r = signed_post(&reqwest::Client::new(), &bridge.url(path), body, &headers)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let records = read_topic(&broker.bootstrap, &topic, 1, Duration::from_millis(500));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].key.as_deref(), Some("oc_chart"));
    assert!(!bridge.log_text().contains(ENCRYPT_KEY));
}
