//! Starts the real binary as a rendered Deployment's pod would run it
//! (tests/deploy/render_pod.py describes the pod): the container's
//! environment as the kubelet assembles it, and the Secret's files laid
//! out under a temporary directory as the volume mount would.
//!
//! What differs from a pod, on purpose and nothing else: the mount path is
//! prefixed with the temporary directory (in the environment and where a
//! Secret's file names another, as kafka.properties' `ssl.ca.location`
//! names `kafka-ca.pem`), the two listen addresses keep
//! their meaning but take port 0 on loopback (a test must not depend on
//! 8080 and 9090 being free), `KAFKA_BROKERS` is the test's broker (the
//! value a user edits), and readiness is checked more often.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::Bridge;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fkb-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs tests/deploy/render_pod.py with these arguments; its JSON answer.
pub fn render(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/deploy/render_pod.py"
        ))
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "render_pod.py {args:?} failed (bash tests/run.sh installs its Python packages): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("render_pod.py prints JSON")
}

/// The mount path of the pod's Secret volume (every file is under it).
pub fn mount_path(pod: &Value) -> String {
    let files = pod["files"].as_object().expect("files");
    let first = files
        .keys()
        .next()
        .expect("the pod mounts a Secret with keys");
    Path::new(first)
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The environment of `pod`'s container, its Secret's files written under
/// `root`, against `brokers` (see the module's doc for what differs).
pub fn environment(pod: &Value, root: &TempDir, brokers: &str) -> Vec<(String, String)> {
    let under_root = |path: &str| -> String {
        let relative = Path::new(path).strip_prefix("/").unwrap_or(Path::new(path));
        root.0.join(relative).to_string_lossy().into_owned()
    };
    let files = pod["files"].as_object().expect("files");
    let mount = mount_path(pod);
    for (path, content) in files {
        let at = PathBuf::from(under_root(path));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let content = content
            .as_str()
            .unwrap()
            .replace(&format!("{mount}/"), &format!("{}/", under_root(&mount)));
        std::fs::write(&at, content).unwrap();
    }

    // A Deployment's listen addresses must be its container ports; a
    // CronJob's pod declares none and listens on nothing.
    let declared: Option<Vec<i64>> = pod["ports"]
        .as_object()
        .map(|ports| ports.values().filter_map(Value::as_i64).collect());
    let mut env: Vec<(String, String)> = Vec::new();
    for (name, value) in pod["env"].as_object().expect("env") {
        let value = value.as_str().unwrap().to_owned();
        let value = if name.ends_with("_LISTEN") {
            if let Some(declared) = &declared {
                let port = value.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
                assert!(
                    declared.contains(&port.parse().unwrap()),
                    "{name}={value} is not a container port: {pod}"
                );
            }
            "127.0.0.1:0".to_owned()
        } else if name == "KAFKA_BROKERS" {
            brokers.to_owned()
        } else if value.starts_with(&mount) {
            // A file of the Secret, present or not (a key the Secret does
            // not have is a missing file in the pod too).
            under_root(&value)
        } else {
            value
        };
        env.push((name.clone(), value));
    }
    env.push(("BRIDGE_READINESS_INTERVAL_MS".into(), "300".into()));
    env
}

/// Starts the bridge as `pod` says, its Secret's files under `root`, against
/// `brokers`. Does not wait for readiness.
pub fn spawn(pod: &Value, root: &TempDir, brokers: &str) -> Bridge {
    let env = environment(pod, root, brokers);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Bridge::spawn_with_env(&env)
}
