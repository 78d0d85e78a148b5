//! What the bridge sets on every librdkafka client it makes: the
//! producer's guarantees and batching, the readers' share of the user's
//! properties, and the reconnect cap they all use.

use rdkafka::config::ClientConfig;

use crate::config::Config;

/// The longest wait between two attempts to reach a broker that is down
/// (librdkafka's default is 10 s, the Java client's 1 s). Every client the
/// bridge makes uses it: after an outage the bridge answers 503 until both
/// the producer and the dedup follower are back, and Feishu's retries of
/// those events are spaced by its own schedule, so each second spent
/// waiting to reconnect to a broker that is already back is a second of
/// 503s (measured in tests/faults.rs, a broker down 3 s under load: ready
/// again 4.8-7.3 s after it returned with the default, 0.3-0.6 s with 1 s,
/// and half as many 503s).
const RECONNECT_BACKOFF_MAX_MS: u64 = 1000;

/// [`RECONNECT_BACKOFF_MAX_MS`], or the user's `reconnect.backoff.ms` when
/// that is longer: librdkafka refuses a maximum below the initial backoff,
/// and a deployment that set only the latter must keep starting.
fn reconnect_backoff_max(config: &Config) -> String {
    let initial = config
        .kafka_properties
        .iter()
        .find(|(k, _)| k == "reconnect.backoff.ms")
        .and_then(|(_, v)| v.expose().trim().parse::<u64>().ok())
        .unwrap_or(0);
    RECONNECT_BACKOFF_MAX_MS.max(initial).to_string()
}

/// The client configuration the bridge needs: guarantees first, then the
/// user's pass-through properties (already checked for conflicts).
pub fn client_config(config: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Same partition for a key as the Java client's default partitioner.
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        // Batching that follows the load (group commit): no timer, and one
        // produce request in flight per broker. A lone record leaves at once;
        // while a request is out, records queue and the next request carries
        // all of them. Measured against every fixed linger
        // (docs/benchmarks.md): faster at concurrency 1 than linger 0 and at the peak
        // than linger 2. One request in flight also keeps the idempotent
        // producer's order trivially.
        .set("linger.ms", "0")
        .set("max.in.flight.requests.per.connection", "1")
        // A record the bridge stopped waiting for (503 at the publish
        // deadline) must be settled before Feishu delivers the event again,
        // perhaps to another replica: its first retry comes 15 s after the
        // failed attempt. By then librdkafka has either had the record
        // acknowledged (and every replica's follower reads it, so the retry
        // is a duplicate) or given up on it; otherwise both replicas would
        // hold a copy that the brokers accept once they can (measured on
        // Apache Kafka with two brokers of three stopped for 60 s under
        // load from 24 chats, tests/apache_kafka_faults.rs: with
        // librdkafka's 300 s default, the 24 events in flight when the
        // brokers stopped were each written twice).
        // A produce request waits at most 5 s for the in-sync replicas, so
        // that one in flight when the record's 10 s run out ends soon after.
        .set("message.timeout.ms", "10000")
        .set("request.timeout.ms", "5000")
        // librdkafka's default of 1 GiB would outgrow any sensible pod
        // limit while a broker is stalled; past this the bridge answers 503.
        .set("queue.buffering.max.kbytes", "65536")
        .set("reconnect.backoff.max.ms", reconnect_backoff_max(config))
        .set("client.id", "feishu-kafka-bridge");
    for (k, v) in &config.kafka_properties {
        cc.set(k, v.expose());
    }
    cc
}

/// Producer-only librdkafka properties: passing them to a consumer only
/// earns a warning, so readers leave them out of `KAFKA_PROPERTIES`.
const PRODUCER_ONLY: &[&str] = &[
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.backpressure.threshold",
    "batch.num.messages",
    "batch.size",
    "compression.type",
    "compression.codec",
    "compression.level",
    "message.send.max.retries",
    "retries",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "request.timeout.ms",
    "sticky.partitioning.linger.ms",
    "queuing.strategy",
    "delivery.report.only.error",
    "enable.gapless.guarantee",
    "transaction.timeout.ms",
];

/// A client that reads from Kafka (the dedup follower, readiness): the same
/// brokers and security settings as the producer, without the producer-only
/// properties of `KAFKA_PROPERTIES`.
pub fn reader_config(config: &Config, client_id: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("reconnect.backoff.max.ms", reconnect_backoff_max(config))
        .set("client.id", client_id);
    for (k, v) in &config.kafka_properties {
        if !PRODUCER_ONLY.contains(&k.as_str()) {
            cc.set(k, v.expose());
        }
    }
    cc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_backoff_cap_is_1_s_unless_the_users_initial_backoff_is_longer() {
        let cap = |props: &[&str]| {
            let mut args = vec!["--topic", "m"];
            for p in props {
                args.extend(["--kafka-property", p]);
            }
            let config = crate::config::validate_args(&args).unwrap();
            let producer = client_config(&config);
            let reader = reader_config(&config, "r");
            assert_eq!(
                producer.get("reconnect.backoff.max.ms"),
                reader.get("reconnect.backoff.max.ms")
            );
            // librdkafka takes the pair (it refuses a cap below the initial).
            producer
                .create::<rdkafka::producer::BaseProducer>()
                .map(|_| {
                    producer
                        .get("reconnect.backoff.max.ms")
                        .unwrap_or_default()
                        .to_owned()
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(cap(&[]).as_deref(), Ok("1000"));
        assert_eq!(cap(&["reconnect.backoff.ms=5000"]).as_deref(), Ok("5000"));
        assert_eq!(
            cap(&["reconnect.backoff.max.ms=30000"]).as_deref(),
            Ok("30000")
        );
    }
}
