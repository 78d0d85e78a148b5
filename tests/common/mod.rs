//! Shared parts of the integration tests: a real Kafka-protocol broker
//! (tansu) started over TCP, the real bridge binary, a Feishu stand-in that
//! signs and encrypts, and a consumer that reads topics back with
//! explicitly assigned partitions.
#![allow(dead_code)]

pub mod child;
pub mod in_process;
pub mod kafka;
pub mod openapi_stand_in;
pub mod pod;
pub mod stand_in;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use feishu_kafka_bridge::protocol::EncryptKey;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

pub const ENCRYPT_KEY: &str = "integration-encrypt-key";
pub const TOKEN: &str = "integration-verification-token";
pub const PARTITIONS: i32 = 3;
pub const SEED: &str = include_str!("../fixtures/seed_sample.json");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    // Where tests/run.sh installs it: /opt as root, the user's home otherwise.
    let mut pinned = vec![PathBuf::from("/opt/tansu-0.6.0/bin/tansu")];
    if let Some(home) = std::env::var_os("HOME") {
        pinned.push(PathBuf::from(home).join(".local/tansu-0.6.0/bin/tansu"));
    }
    if let Some(found) = pinned.into_iter().find(|p| p.exists()) {
        return found;
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    panic!(
        "the tansu broker is not installed: these tests need a real Kafka-protocol broker. \
         Run `bash tests/run.sh` (it installs tansu 0.6.0 into /opt/tansu-0.6.0 as root, \
         ~/.local/tansu-0.6.0 otherwise) or set TANSU_BIN."
    );
}

/// A tansu broker with in-memory storage, killed on drop.
pub struct Broker {
    child: Child,
    pub bootstrap: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_on(free_port())
    }

    /// Starts tansu on a given port (for a bridge configured before the broker exists).
    pub fn start_on(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("tansu-{port}.log"));
        let mut cmd = Command::new(tansu_bin());
        cmd.args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&log)
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        );
        let child = child::spawn(cmd).expect("cannot start tansu");
        let broker = Broker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let give_up = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < give_up,
                "tansu did not listen on {port} within 30 s (log: {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// One broker per test binary: tests share it and use their own topics.
    pub fn shared() -> &'static Broker {
        static BROKER: OnceLock<Broker> = OnceLock::new();
        BROKER.get_or_init(Broker::start)
    }

    pub fn create_topics(&self, topics: &[&str]) {
        create_topics_on(&self.bootstrap, topics, 1, Duration::from_secs(10));
    }
}

/// Creates topics of [`PARTITIONS`] partitions and `replication` replicas
/// through the admin API, on a thread of its own so that it works from
/// sync and async tests alike.
pub fn create_topics_on(bootstrap: &str, topics: &[&str], replication: i32, timeout: Duration) {
    let bootstrap = bootstrap.to_owned();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    std::thread::spawn(move || {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin client");
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(replication)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        let results = rt
            .block_on(admin.create_topics(&new, &opts))
            .expect("create_topics");
        for r in results {
            if let Err((topic, code)) = r {
                panic!("cannot create topic {topic}: {code:?}");
            }
        }
    })
    .join()
    .expect("topic creation");
}

/// A unique topic name (and its DLQ) for one test, created on the broker.
pub fn topics(broker: &Broker, test: &str) -> (String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let topic = format!("withdrawn.{test}.{}.{n}", std::process::id());
    let dlq = format!("{topic}.dlq");
    broker.create_topics(&[&topic, &dlq]);
    (topic, dlq)
}

/// The real bridge binary, its log lines captured; killed on drop.
pub struct Bridge {
    child: Child,
    /// The callback listener (empty when only the long connection is on).
    pub addr: String,
    /// The admin listener: /metrics, /readyz, /healthz.
    pub admin: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bridge {
    pub fn start(brokers: &str, topic: &str, extra_env: &[(&str, &str)]) -> Bridge {
        let bridge = Self::spawn(brokers, topic, extra_env);
        bridge.wait_ready(Duration::from_secs(30));
        bridge
    }

    /// Starts the bridge without waiting for readiness.
    pub fn spawn(brokers: &str, topic: &str, extra_env: &[(&str, &str)]) -> Bridge {
        let mut env = vec![
            ("BRIDGE_LISTEN", "127.0.0.1:0"),
            ("BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_TOPIC", topic),
            ("FEISHU_ENCRYPT_KEY", ENCRYPT_KEY),
            ("FEISHU_VERIFICATION_TOKEN", TOKEN),
            ("BRIDGE_LOG_FORMAT", "json"),
            ("BRIDGE_READINESS_INTERVAL_MS", "300"),
        ];
        env.extend_from_slice(extra_env);
        Self::spawn_with_env(&env)
    }

    /// Starts the bridge with exactly this environment (later entries win);
    /// it must log JSON (`BRIDGE_LOG_FORMAT=json`).
    pub fn spawn_with_env(env: &[(&str, &str)]) -> Bridge {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_feishu-kafka-bridge"));
        cmd.env_clear().stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = child::spawn(cmd).expect("cannot start the bridge binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["message"] == "listening" {
                            let field = |f: &str| v[f].as_str().unwrap_or_default().to_owned();
                            let _ = tx.send((field("addr"), field("admin_addr")));
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let (addr, admin) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "bridge did not log `listening`; logs: {:?}",
                    logs.lock().unwrap()
                )
            });
        Bridge {
            child,
            addr,
            admin,
            logs,
        }
    }

    /// A URL on the callback listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn wait_ready(&self, within: Duration) {
        let give_up = Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::blocking_get(&self.admin_url("/readyz")) {
                if r == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < give_up,
                "bridge not ready within {within:?}; logs: {:?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let give_up = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < give_up,
                "bridge did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Reads a counter or gauge value from Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `requests_total` of the webhook ingress for one outcome.
pub fn webhook_outcome(metrics: &str, outcome: &str) -> f64 {
    metric(
        metrics,
        &format!("feishu_bridge_requests_total{{ingress=\"webhook\",outcome=\"{outcome}\"}}"),
    )
}

/// `dedup_ids_learned_total` for one source (`warm_start`, `followed`).
pub fn ids_learned(metrics: &str, source: &str) -> f64 {
    metric(
        metrics,
        &format!("feishu_bridge_dedup_ids_learned_total{{source=\"{source}\"}}"),
    )
}

pub mod reqwest {
    pub use ::reqwest::*;
    /// A tiny blocking GET returning the status code, without pulling in
    /// reqwest's blocking client.
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest
            .split_once('/')
            .map(|(h, p)| (h, format!("/{p}")))
            .unwrap_or((rest, "/".into()));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        buf.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))
    }
}

/// A callback POST with Feishu's headers, as every test sends it.
pub fn signed_post(
    client: &::reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> ::reqwest::RequestBuilder {
    headers.iter().fold(
        client
            .post(url)
            .header("content-type", "application/json")
            .body(body),
        |req, (k, v)| req.header(*k, v),
    )
}

/// Plays Feishu's push side: encrypts, signs, posts.
pub struct Feishu {
    pub key: EncryptKey,
    pub client: ::reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

impl Default for Feishu {
    fn default() -> Self {
        Self::new()
    }
}

impl Feishu {
    pub fn new() -> Self {
        Feishu {
            key: EncryptKey::new(ENCRYPT_KEY),
            client: ::reqwest::Client::new(),
        }
    }

    /// Feishu with another Encrypt Key (e.g. one being rotated in or out);
    /// the token is the envelope's, set by the caller.
    pub fn with_key(encrypt_key: &str) -> Self {
        Feishu {
            key: EncryptKey::new(encrypt_key),
            client: ::reqwest::Client::new(),
        }
    }

    /// The body Feishu would send for `envelope`, and its signature headers.
    pub fn sign(&self, envelope: &Value) -> (Vec<u8>, [(&'static str, String); 3]) {
        let iv: [u8; 16] = rand::random();
        let body =
            serde_json::json!({ "encrypt": self.key.encrypt(envelope.to_string().as_bytes(), iv) })
                .to_string()
                .into_bytes();
        let ts = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs())
        .to_string();
        let nonce = format!("n{}", rand::random::<u32>());
        let sig = self.key.sign(&ts, &nonce, &body);
        (
            body,
            [
                ("X-Lark-Request-Timestamp", ts),
                ("X-Lark-Request-Nonce", nonce),
                ("X-Lark-Signature", sig),
            ],
        )
    }

    pub async fn push(&self, bridge: &Bridge, envelope: &Value) -> Reply {
        let (body, headers) = self.sign(envelope);
        self.post(bridge, body, &headers).await
    }

    pub async fn post(&self, bridge: &Bridge, body: Vec<u8>, headers: &[(&str, String)]) -> Reply {
        let resp = signed_post(&self.client, &bridge.url("/webhook/event"), body, headers)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("bridge answered");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        Reply {
            status,
            body: resp.text().await.unwrap_or_default(),
            retry_after,
        }
    }
}

/// The seed sample with a fresh event_id, the test token and the given chat.
pub fn withdrawal(event_id: &str, chat_id: &str) -> Value {
    let mut v: Value = serde_json::from_str(SEED).unwrap();
    v["header"]["event_id"] = event_id.into();
    v["header"]["token"] = TOKEN.into();
    v["event"]["chat_id"] = chat_id.into();
    v
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub value: Value,
    /// The record's timestamp (ms): when the bridge handed it to its producer.
    pub timestamp: Option<i64>,
}

/// Reads `topic` from the beginning of every partition until `expect`
/// records arrived, then keeps reading for `settle` to catch extras
/// (duplicates) that must not be there.
pub fn read_topic(bootstrap: &str, topic: &str, expect: usize, settle: Duration) -> Vec<Record> {
    read_topic_with(
        &[("bootstrap.servers".into(), bootstrap.into())],
        topic,
        expect,
        settle,
    )
}

/// [`read_topic`] with a client configuration of its own (a user's
/// SASL_SSL properties, say).
pub fn read_topic_with(
    config: &[(String, String)],
    topic: &str,
    expect: usize,
    settle: Duration,
) -> Vec<Record> {
    let mut cc = ClientConfig::new();
    for (k, v) in config {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc
        .set("group.id", format!("reader-{}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if out.len() >= expect && settle_until.is_none() {
            settle_until = Some(now + settle);
        }
        if settle_until.is_some_and(|t| now >= t) || now >= give_up {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg.expect("consume");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            value: serde_json::from_slice(msg.payload().unwrap_or_default())
                .expect("record value is JSON"),
            timestamp: msg.timestamp().to_millis(),
        });
    }
    out
}

/// The partition the Java client's default partitioner picks for a key.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) as u32 & 0x7fff_ffff) % partitions as u32) as i32
}

/// Kafka's murmur2, as in the Java client's `Utils.murmur2`.
pub fn murmur2(key: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let seed: u32 = 0x9747_b28c;
    let len = key.len() as u32;
    let mut h = seed ^ len;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}
