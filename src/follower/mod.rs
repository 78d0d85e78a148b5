//! The follower: feeds the dedup memory from the topics themselves, so that
//! it survives restarts and spans replicas.
//!
//! Every record, raw record and dead letter the bridge writes carries its
//! `event_id` in a header, so its topics are already a durable, shared log
//! of every id any replica published, whatever the event's type. The
//! follower reads them all back:
//!
//! * **Warm start.** At start-up it looks up, per partition, the first
//!   offset younger than the TTL (ListOffsets by timestamp) and the end
//!   offset, reads that range, and [`Dedup::learn`]s every id with an expiry
//!   counted from the record's timestamp. Records are filtered by timestamp
//!   here too: not every broker answers the lookup precisely (tansu 0.6
//!   answers it with the earliest offset). When the range holds more records
//!   than the capacity, each partition is read only for its newest share, so
//!   the newest ids win. Until the range is read, or the budget runs out, the
//!   memory is incomplete: claims of ids not read yet are refused (503 /
//!   `{"code":500}`; an id already read is a duplicate) and the
//!   replica is not ready. Past the budget the replica becomes ready anyway
//!   (availability over a perfect memory), says so in a warning and a metric,
//!   and keeps reading the rest in the background.
//! * **Follow.** Then it keeps reading the topics as they grow, so an id
//!   published by another replica is known here a moment later (measured in
//!   docs/deduplication.md). Partitions are assigned explicitly: no
//!   consumer-group membership, no offset commits; partitions added later
//!   are picked up from their beginning.
//!
//! It runs on a thread of its own: librdkafka's consumer API blocks, and the
//! work (a header lookup and a hash per record) must not compete with the
//! request path's Tokio workers for scheduling.

mod catch_up;
mod learner;
mod plan;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::dedup::Dedup;
use crate::destination::Destination;
use crate::metrics::Metrics;
use learner::{Learner, Progress, Watched};

/// The group id the follower's consumer carries. librdkafka needs one to
/// assign partitions; the follower never joins the group and never commits,
/// so no group state is created on the broker. Fixed, so that a cluster with
/// ACLs can grant it (docs/deduplication.md, Permissions).
pub const GROUP_ID: &str = "feishu-kafka-bridge.dedup-follower";

/// One poll waits at most this long, so that stop requests, the heartbeat
/// and the lag figures are never older than about this.
const POLL: Duration = Duration::from_millis(200);
/// Lag and heartbeat metrics are refreshed this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Metadata is asked again this often, for partitions added to a topic
/// (or a dead-letter topic created) after start-up.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Timeout of one metadata or offset request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait between two attempts to plan the warm start while Kafka is away.
const PLAN_RETRY: Duration = Duration::from_millis(500);

/// What librdkafka may pre-fetch for the follower: at most this many KiB
/// waiting in its queue, and fetch responses of at most [`FETCH_MAX_BYTES`].
/// The fetch size is what the process's memory follows: a warm start of
/// 1,000,000 records on tansu held about 140 MiB in librdkafka with 8 MiB
/// fetches, 115 MiB with 4 MiB, 70 MiB with 2 MiB and 40 MiB with 1 MiB,
/// whatever the queue bound (docs/benchmarks.md).
const QUEUED_MAX_KBYTES: &str = "1024";
const FETCH_MAX_BYTES: &str = "1048576";

/// The consumer's configuration: the same brokers and security settings as
/// the producer, bounded pre-fetch, reads that return quickly when idle.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut cc = crate::sink::reader_config(config, "feishu-kafka-bridge-follower");
    // Set after the pass-through: the follower's correctness and memory
    // bound depend on these.
    cc.set("group.id", GROUP_ID)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // A start offset lost to retention means "from the oldest left".
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES)
        .set("queued.min.messages", "1000")
        .set("fetch.max.bytes", FETCH_MAX_BYTES)
        // How long a fetch may wait at the broker for records, and how
        // much it waits for: a full fetch or 50 ms, whichever comes first.
        // Apache Kafka would otherwise answer each fetch as soon as one
        // record arrives: the follower then fetched once per event and
        // took a third of the bridge's CPU (measured with run.sh on Kafka's
        // single node at concurrency 64: 147.6 µs per event and 4,645
        // events/s with fetch.min.bytes 1, 100.0 µs and 7,353/s with 1 MiB,
        // 85.4 µs and 9,094/s without the follower; the broker's CPU per
        // event 228 -> 136 µs). tansu 0.6 always waits the full time. The
        // wait is most of the window in which another replica does not
        // know an id yet (Feishu's retries come 15 s or more later).
        .set("fetch.wait.max.ms", "50")
        .set("fetch.min.bytes", FETCH_MAX_BYTES);
    cc
}

pub struct Follower {
    consumer: BaseConsumer<Context>,
    learner: Learner,
    capacity: u64,
    budget: Duration,
}

/// Keeps the end offsets from librdkafka's statistics (delivered on the
/// follower's own thread by `poll`), for the lag without extra requests.
#[derive(Default)]
struct Context {
    ends: Mutex<HashMap<(String, i32), i64>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        for (name, topic) in statistics.topics {
            for (id, partition) in topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if id >= 0 && partition.hi_offset >= 0 {
                    ends.insert((name.clone(), id), partition.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Context {}

impl Context {
    fn end(&self, topic: &str, partition: i32) -> Option<i64> {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        ends.get(&(topic.to_owned(), partition)).copied()
    }
}

impl Follower {
    /// Creates the consumer (a bad pass-through property fails here, at
    /// start-up); nothing is read until [`Follower::spawn`].
    pub fn new(config: &Config, dedup: Dedup, metrics: Metrics) -> Result<Self, KafkaError> {
        let mut cc = client_config(config);
        cc.set("statistics.interval.ms", "1000");
        let consumer = cc.create_with_context(Context::default())?;
        // Every topic the bridge writes: an id published to any of them is
        // a duplicate wherever its copy lands. (The raw topic may be the
        // member topic; it is read once.)
        let raw = config
            .routing
            .raw_topic()
            .filter(|raw| *raw != config.topic)
            .map(|t| (t, Destination::Raw));
        let topics = [
            (config.topic.as_str(), Destination::Record),
            (config.dlq_topic.as_str(), Destination::DeadLetter),
        ]
        .into_iter()
        .chain(raw)
        .map(|(name, destination)| Watched {
            name: name.to_owned(),
            destination,
            partitions: Vec::new(),
        })
        .collect();
        Ok(Follower {
            consumer,
            learner: Learner {
                topics,
                progress: HashMap::new(),
                dedup,
                metrics,
            },
            capacity: config.dedup_capacity,
            budget: config.dedup_warm_start_budget,
        })
    }

    /// Runs the warm start, then follows, on a thread of its own until
    /// `stop` turns true.
    pub fn spawn(
        self,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("dedup-follower".into())
            .spawn(move || self.run(stop))
    }

    fn run(mut self, stop: watch::Receiver<bool>) {
        self.learner.metrics.follower.enabled.set(1);
        let stopped = || *stop.borrow();
        let mut told = false;
        let plan = loop {
            if stopped() {
                return;
            }
            match plan::plan(&self.consumer, &mut self.learner, self.capacity) {
                Ok(plan) => break plan,
                Err(reason) => {
                    if !told {
                        warn!(%reason, "dedup warm start: waiting for Kafka to answer for the topics");
                        told = true;
                    }
                    self.learner
                        .metrics
                        .follower
                        .last_poll
                        .set(crate::clock::now_secs());
                    std::thread::sleep(PLAN_RETRY);
                }
            }
        };
        if let Err(e) = self.consumer.assign(&plan.assignment) {
            // Cannot happen with a well-formed list; if it does, readiness
            // must not wait for a warm start that will never read anything.
            warn!(error = %e, "dedup warm start: cannot assign partitions; the memory starts empty");
            self.learner.dedup.mark_complete();
            return;
        }
        info!(
            records = plan.records,
            partitions = plan.assignment.count(),
            "dedup warm start: reading the topics back"
        );
        let began = Instant::now();
        let mut learned_count: u64 = 0;
        let mut last_report = Instant::now();
        let mut pending = self.unfinished();
        let exceeded = loop {
            if stopped() {
                return;
            }
            if pending == 0 {
                break false;
            }
            if began.elapsed() >= self.budget {
                break true;
            }
            if let Some(Ok(msg)) = self.consumer.poll(POLL) {
                if self.learner.take(&msg) {
                    learned_count += 1;
                }
            }
            if last_report.elapsed() >= POLL {
                pending = self.unfinished();
                self.report_lag();
                last_report = Instant::now();
            }
        };
        let took = began.elapsed();
        self.learner
            .metrics
            .follower
            .warm_start_duration
            .set(took.as_secs_f64());
        self.learner.dedup.mark_complete();
        if exceeded {
            self.learner
                .metrics
                .follower
                .warm_start_budget_exceeded
                .set(1);
            warn!(
                learned = learned_count,
                remembered = self.learner.dedup.len(),
                budget_secs = self.budget.as_secs(),
                unread_partitions = pending,
                "dedup warm start ran out of its budget: ready with an incomplete memory (a retry of an id not read yet may be published again); reading the rest in the background"
            );
        } else {
            info!(
                learned = learned_count,
                remembered = self.learner.dedup.len(),
                took_ms = took.as_millis() as u64,
                "dedup warm start complete"
            );
        }

        let mut last_refresh = Instant::now();
        let mut catching_up = None;
        while !stopped() {
            if let Some(Ok(msg)) = self.consumer.poll(POLL) {
                self.learner.take(&msg);
            }
            self.catch_up_step(&mut catching_up);
            if last_report.elapsed() >= REPORT_EVERY {
                self.report_lag();
                last_report = Instant::now();
            }
            if last_refresh.elapsed() >= REFRESH_EVERY {
                self.pick_up_new_partitions();
                last_refresh = Instant::now();
            }
        }
    }

    /// Partitions whose warm-start range is not read yet.
    fn unfinished(&self) -> usize {
        let Ok(positions) = self.consumer.position() else {
            return self.learner.progress.len();
        };
        self.learner
            .progress
            .iter()
            .filter(|(&(i, p), progress)| {
                // No position yet means nothing was read: still at the start.
                let at = positions
                    .find_partition(&self.learner.topics[i].name, p)
                    .and_then(|e| e.offset().to_raw())
                    .filter(|&o| o >= 0)
                    .unwrap_or(progress.start);
                at < progress.warm_end
            })
            .count()
    }

    /// Refreshes the lag gauges (from librdkafka's cached end offsets, no
    /// request) and the heartbeat.
    fn report_lag(&self) {
        let f = &self.learner.metrics.follower;
        f.last_poll.set(crate::clock::now_secs());
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let now_ms = crate::clock::now_ms();
        for (i, topic) in self.learner.topics.iter().enumerate() {
            let mut records = 0i64;
            let mut oldest_ms: Option<i64> = None;
            for &p in &topic.partitions {
                let Some(at) = positions
                    .find_partition(&topic.name, p)
                    .and_then(|e| e.offset().to_raw())
                    .filter(|&o| o >= 0)
                else {
                    continue;
                };
                let Some(high) = self.consumer.context().end(&topic.name, p) else {
                    continue;
                };
                if high > at {
                    records += high - at;
                    let last = self
                        .learner
                        .progress
                        .get(&(i, p))
                        .and_then(|pr| pr.last_timestamp_ms);
                    if let Some(ms) = last {
                        oldest_ms = Some(oldest_ms.map_or(ms, |o| o.min(ms)));
                    }
                }
            }
            let label = [topic.destination.label()];
            f.lag_records.with_label_values(&label).set(records);
            let seconds = oldest_ms.map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
            f.lag_seconds.with_label_values(&label).set(seconds);
        }
    }

    /// Assigns partitions that appeared since start-up, from their beginning:
    /// everything in them was written after the follower last looked.
    fn pick_up_new_partitions(&mut self) {
        let mut added = TopicPartitionList::new();
        for (i, topic) in self.learner.topics.iter_mut().enumerate() {
            let Ok(partitions) = partitions_of(&self.consumer, &topic.name) else {
                continue;
            };
            for p in partitions {
                if !topic.partitions.contains(&p)
                    && added
                        .add_partition_offset(&topic.name, p, Offset::Beginning)
                        .is_ok()
                {
                    topic.partitions.push(p);
                    self.learner.progress.insert((i, p), Progress::default());
                }
            }
        }
        if added.count() == 0 {
            return;
        }
        match self.consumer.incremental_assign(&added) {
            Ok(()) => info!(
                partitions = added.count(),
                "dedup follower: following new partitions"
            ),
            Err(e) => {
                warn!(error = %e, "dedup follower: cannot assign new partitions; will try again");
                for e in added.elements() {
                    if let Some(i) = self.learner.topics.iter().position(|t| t.name == e.topic()) {
                        self.learner.topics[i]
                            .partitions
                            .retain(|&p| p != e.partition());
                        self.learner.progress.remove(&(i, e.partition()));
                    }
                }
            }
        }
    }
}

/// The partitions of `topic`, or why they cannot be known.
fn partitions_of(consumer: &BaseConsumer<Context>, topic: &str) -> Result<Vec<i32>, String> {
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or("not in the metadata")?;
    if let Some(e) = t.error() {
        return Err(format!("{:?}", rdkafka::error::RDKafkaErrorCode::from(e)));
    }
    if t.partitions().is_empty() {
        return Err("no partitions".into());
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn producer_only_properties_stay_with_the_producer() {
        let mut config = Config::with_defaults("k:9092");
        config.kafka_properties = vec![
            ("linger.ms".into(), Secret::new("5")),
            ("security.protocol".into(), Secret::new("SSL")),
            ("group.id".into(), Secret::new("theirs")),
        ];
        let cc = client_config(&config);
        assert_eq!(cc.get("linger.ms"), None);
        assert_eq!(cc.get("security.protocol"), Some("SSL"));
        // The follower's own settings win over the pass-through.
        assert_eq!(cc.get("group.id"), Some(GROUP_ID));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        // And librdkafka accepts the whole set.
        if let Err(e) = cc.create::<BaseConsumer>() {
            panic!("librdkafka refuses the follower config: {e}");
        }
    }
}
