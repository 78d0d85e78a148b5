//! Reads the internal topic from its beginning, then follows it, into the
//! ticket book: a replica that starts learns the newest ticket another one
//! received, and a ticket pushed to any replica reaches the others within
//! a poll.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use super::metrics::source;
use super::{record, Tickets};
use crate::config::Config;

const POLL: Duration = Duration::from_millis(200);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Between attempts to learn the topic's partitions.
const RETRY: Duration = Duration::from_secs(1);

pub struct TicketReader {
    consumer: BaseConsumer,
    topic: String,
    tickets: Tickets,
}

impl TicketReader {
    /// The consumer (a bad pass-through property fails here, at start-up).
    pub fn new(config: &Config, topic: &str, tickets: Tickets) -> Result<Self, KafkaError> {
        let mut cc = crate::sink::reader_config(config, "feishu-kafka-bridge-tickets");
        // Partitions are assigned, never subscribed: no group, no commits;
        // every replica reads everything from the beginning.
        cc.set("group.id", "feishu-kafka-bridge-tickets")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100");
        Ok(TicketReader {
            consumer: cc.create()?,
            topic: topic.to_owned(),
            tickets,
        })
    }

    /// Reads on a thread of its own until `stop` turns true.
    pub fn spawn(
        self,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ticket-reader".into())
            .spawn(move || self.run(stop))
    }

    fn run(self, stop: watch::Receiver<bool>) {
        let stopped = || *stop.borrow();
        let mut told = false;
        // Per partition, the offset below which the start-up read ends.
        let mut ends = loop {
            if stopped() {
                return;
            }
            match self.plan() {
                Ok(ends) => break ends,
                Err(reason) => {
                    if !told {
                        warn!(topic = %self.topic, %reason, "store apps: cannot read the internal topic yet; their tickets wait for it");
                        told = true;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        };
        let mut assignment = TopicPartitionList::new();
        for partition in ends.keys() {
            // A well-formed list of existing partitions cannot be refused.
            let _ = assignment.add_partition_offset(&self.topic, *partition, Offset::Beginning);
        }
        if let Err(e) = self.consumer.assign(&assignment) {
            warn!(topic = %self.topic, error = %e, "store apps: cannot assign the internal topic's partitions");
            return;
        }
        ends.retain(|_, end| *end > 0);
        let mut loaded = false;
        while !stopped() {
            if ends.is_empty() && !loaded {
                loaded = true;
                self.tickets.mark_loaded();
                info!(topic = %self.topic, "store apps: the internal topic is read; following it");
            }
            let Some(Ok(msg)) = self.consumer.poll(POLL) else {
                continue;
            };
            match record::read(msg.key(), msg.payload()) {
                Some(record::Internal::Ticket { app_id, ticket }) => {
                    self.tickets.learn(&app_id, ticket, source::INTERNAL_TOPIC)
                }
                Some(record::Internal::Tenant { app_id, tenant_key }) => {
                    self.tickets.known_tenant(&app_id, &tenant_key)
                }
                None => {}
            }
            if ends
                .get(&msg.partition())
                .is_some_and(|end| msg.offset() + 1 >= *end)
            {
                ends.remove(&msg.partition());
            }
        }
    }

    /// The topic's partitions and where each ends now (its high watermark).
    fn plan(&self) -> Result<HashMap<i32, i64>, String> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or("the topic is not in the metadata")?;
        if let Some(e) = topic.error() {
            return Err(format!("{e:?}"));
        }
        if topic.partitions().is_empty() {
            return Err("the topic does not exist".into());
        }
        let mut ends = HashMap::new();
        for p in topic.partitions() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), METADATA_TIMEOUT)
                .map_err(|e| e.to_string())?;
            // An empty partition (or one retention emptied) has nothing to read.
            ends.insert(p.id(), if high > low { high } else { 0 });
        }
        Ok(ends)
    }
}
