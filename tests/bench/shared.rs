//! What the benchmark drivers (`loadgen.rs`, `soak.rs`) share: the secrets
//! and run id they sign events with, the HTTP/1.1 connection they keep
//! alive, the percentile they report and the consumer they read back with.
//! Included by each driver with `#[path = "shared.rs"] mod shared;`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rdkafka::consumer::BaseConsumer;
use rdkafka::ClientConfig;

/// The secrets the system under test is configured with, and the prefix
/// that makes this run's event_ids unique.
#[derive(clap::Args, Debug)]
pub struct EventArgs {
    #[arg(long, default_value = "bench-encrypt-key")]
    pub encrypt_key: String,
    #[arg(long, default_value = "bench-verification-token")]
    pub token: String,
    /// Prefix of the event_ids, unique per run.
    #[arg(long)]
    pub run_id: String,
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive connection, without Nagle's delay (a webhook answer is
/// one small write).
pub async fn connect(addr: &str) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// The `q` quantile of latencies in µs, in ms (nearest rank).
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0
}

/// A consumer for reading the topics back: no commits, large fetches.
pub fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .expect("consumer")
}
