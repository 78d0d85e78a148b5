//! CPU cost of one callback's own work, without HTTP or Kafka: verify the
//! signature, decrypt, parse and classify, normalize, serialize the record.
//! Prints ns per event; run it under `valgrind --tool=callgrind` for
//! instruction counts, which are stable on these shared machines:
//!
//!     cargo build --release --features bench --bin feishu-bench-pipeline
//!     valgrind --tool=callgrind target/release/feishu-bench-pipeline 2000
//!
//! The argument is the number of events (default 200,000).

use std::time::{Instant, SystemTime};

use feishu_kafka_bridge::config::Secret;
use feishu_kafka_bridge::protocol::{EncryptKey, Inbound, SignatureHeaders, Verifier};
use feishu_kafka_bridge::record::member::{normalize, MemberKind};

const SEED: &str = include_str!("../fixtures/seed_sample.json");
const KEY: &str = "bench-encrypt-key";

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let key = EncryptKey::new(KEY);
    let mut seed: serde_json::Value = serde_json::from_str(SEED).expect("seed");
    seed["header"]["token"] = "t".into();
    let body = serde_json::json!({"encrypt": key.encrypt(seed.to_string().as_bytes(), [7; 16])})
        .to_string();
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let sig = key.sign(&ts, "nonce", body.as_bytes());
    let verifier = Verifier::new(Some(&Secret::new(KEY)), Some(Secret::new("t")), None);
    let headers = SignatureHeaders {
        timestamp: Some(&ts),
        nonce: Some("nonce"),
        signature: Some(&sig),
    };

    let started = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let Ok(Inbound::Event(event)) =
            verifier.verify(body.as_bytes(), headers, SystemTime::now())
        else {
            panic!("the sample must verify");
        };
        let rec = normalize(&event, MemberKind::UserWithdrawn, 0).expect("the sample normalizes");
        bytes += serde_json::to_vec(&rec).expect("serializes").len();
    }
    let took = started.elapsed();
    println!(
        "{n} events: {:.0} ns per event ({} bytes of records)",
        took.as_nanos() as f64 / n as f64,
        bytes
    );
}
