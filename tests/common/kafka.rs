//! Apache Kafka, the broker users run, started through tests/kafka/kafka.sh
//! (the same script the benchmarks and CI use): `prepare` writes the
//! certificates, users and configs, each node is then started here as a
//! child of the test process (so it dies with it, whatever ends the test),
//! and `acls` grants what docs/operations.md's ACL table lists.
//!
//! Single mode is one PLAINTEXT node; cluster mode is a controller and three
//! brokers (replication factor 3, min.insync.replicas 2) whose clients use
//! SASL_SSL with SCRAM-SHA-512 and are held to ACLs. Topics and ACLs are
//! managed through the brokers' PLAINTEXT inter-broker listener, whose
//! anonymous principal is a super user; the bridge never uses it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::child;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Single,
    Cluster,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Cluster => "cluster",
        }
    }
}

pub struct Kafka {
    pub mode: Mode,
    pub dir: PathBuf,
    env: HashMap<String, String>,
    nodes: Mutex<HashMap<String, Child>>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/kafka.sh")
}

fn run_script(args: &[&str]) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "tests/kafka/kafka.sh {args:?} failed (bash tests/run.sh installs Java and Maven and fetches Kafka's jars): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Kafka {
    /// Prepares and starts Kafka in `mode`; returns once every broker has
    /// started and the ACLs are in place.
    pub fn start(mode: Mode) -> Kafka {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n == 0 {
            remove_left_behind();
        }
        let dir = std::env::temp_dir().join(format!(
            "fkb-kafka-{}-{}-{n}",
            mode.as_str(),
            std::process::id()
        ));
        run_script(&["prepare", mode.as_str(), dir.to_str().unwrap()]);
        let text = std::fs::read_to_string(dir.join("kafka.env")).expect("kafka.env");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let kafka = Kafka {
            mode,
            dir,
            env,
            nodes: Mutex::new(HashMap::new()),
        };
        let names = kafka.node_names();
        for name in &names {
            kafka.spawn_node(name);
        }
        for name in &names {
            kafka.wait_started(name, 1, Duration::from_secs(120));
        }
        run_script(&["acls", kafka.dir.to_str().unwrap()]);
        kafka
    }

    pub fn env(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not in kafka.env"))
    }

    /// The clients' listener (SASL_SSL in cluster mode).
    pub fn bootstrap(&self) -> String {
        self.env("KAFKA_BOOTSTRAP").to_owned()
    }

    /// The PLAINTEXT listener of the anonymous super user.
    pub fn admin_bootstrap(&self) -> String {
        self.env("KAFKA_ADMIN_BOOTSTRAP").to_owned()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.env("KAFKA_NODES")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The brokers' node names (`b1`..`b3`, or `k0` in single mode).
    pub fn broker_names(&self) -> Vec<String> {
        self.node_names()
            .into_iter()
            .filter(|n| !n.starts_with('c'))
            .collect()
    }

    /// The node name of broker `id`.
    pub fn name_of(&self, id: i32) -> String {
        self.node_names()
            .into_iter()
            .find(|n| self.env(&format!("KAFKA_{}_ID", n.to_uppercase())) == id.to_string())
            .unwrap_or_else(|| panic!("no broker with id {id}"))
    }

    fn log_of(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("server.log")
    }

    fn started_count(&self, name: &str) -> usize {
        std::fs::read_to_string(self.log_of(name))
            .map(|t| t.matches("Kafka Server started").count())
            .unwrap_or(0)
    }

    fn spawn_node(&self, name: &str) {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(["node", self.dir.to_str().unwrap(), name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = child::spawn(cmd).expect("cannot start a Kafka node");
        self.nodes.lock().unwrap().insert(name.to_owned(), child);
    }

    fn wait_started(&self, name: &str, times: usize, within: Duration) {
        let give_up = Instant::now() + within;
        while self.started_count(name) < times {
            if let Some(child) = self.nodes.lock().unwrap().get_mut(name) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "Kafka node {name} exited ({status}); its log: {}",
                        self.log_of(name).display()
                    );
                }
            }
            assert!(
                Instant::now() < give_up,
                "Kafka node {name} did not start within {within:?}; its log: {}",
                self.log_of(name).display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL: the node dies without a word to the controller.
    pub fn kill(&self, name: &str) {
        if let Some(mut child) = self.nodes.lock().unwrap().remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a rolling restart stops a broker: it hands its
    /// leaderships over before it exits.
    pub fn stop(&self, name: &str) {
        let Some(mut child) = self.nodes.lock().unwrap().remove(name) else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let give_up = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > give_up {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.wait();
    }

    /// Starts a stopped or killed node again and waits until it started.
    pub fn restart(&self, name: &str) {
        let before = self.started_count(name);
        self.spawn_node(name);
        self.wait_started(name, before + 1, Duration::from_secs(120));
    }

    /// Creates topics (3 partitions; replication 3 in cluster mode).
    pub fn create_topics(&self, topics: &[&str]) {
        let rf = if self.mode == Mode::Cluster { 3 } else { 1 };
        super::create_topics_on(&self.admin_bootstrap(), topics, rf, Duration::from_secs(20));
    }

    /// Each partition's leader and in-sync replicas, as the cluster says.
    pub fn partitions(&self, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.admin_bootstrap())
            .create()
            .expect("metadata client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader(), p.isr().to_vec()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One more literal ACL: `user` may `operation` on `topic`.
    pub fn allow(&self, user: &str, operation: &str, topic: &str) {
        run_script(&["allow", self.dir.to_str().unwrap(), user, operation, topic]);
    }

    /// librdkafka properties for `user` over SASL_SSL (cluster mode),
    /// trusting `ca`.
    pub fn sasl_ssl(&self, user: &str, password: &str, ca: &str) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", self.env("KAFKA_SASL_MECHANISM")),
            ("sasl.username", user),
            ("sasl.password", password),
            ("ssl.ca.location", ca),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// What the consumer user reads with: the clients' listener and its
    /// SASL_SSL properties.
    pub fn reader_config(&self) -> Vec<(String, String)> {
        let mut config = vec![("bootstrap.servers".to_owned(), self.bootstrap())];
        if self.mode == Mode::Cluster {
            config.extend(self.sasl_ssl(
                self.env("KAFKA_CONSUMER_USER"),
                self.env("KAFKA_CONSUMER_PASSWORD"),
                self.env("KAFKA_CA"),
            ));
        }
        config
    }

    /// The bridge's user's properties, as `KAFKA_PROPERTIES` pairs.
    pub fn bridge_properties(&self) -> String {
        if self.mode == Mode::Single {
            return String::new();
        }
        joined(&self.sasl_ssl(
            self.env("KAFKA_BRIDGE_USER"),
            self.env("KAFKA_BRIDGE_PASSWORD"),
            self.env("KAFKA_CA"),
        ))
    }
}

/// Properties as `KAFKA_PROPERTIES` takes them: `k=v,k=v`.
pub fn joined(properties: &[(String, String)]) -> String {
    properties
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A cluster shared by a test binary lives in a `static`, which is never
/// dropped: its folder is removed by the next test process that starts one,
/// once the process that made it is gone.
fn remove_left_behind() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("fkb-kafka-") else {
            continue;
        };
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        for (_, mut child) in self.nodes.lock().unwrap().drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("Kafka's logs are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
