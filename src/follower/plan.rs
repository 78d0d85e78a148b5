//! The warm start's plan: per partition, the range of records whose ids
//! the dedup memory must hold before the replica is ready.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::learner::{Learner, Progress};
use super::{partitions_of, Context, REQUEST_TIMEOUT};
use crate::destination::Destination;

/// What the warm start decided to read.
pub(super) struct Plan {
    pub(super) assignment: TopicPartitionList,
    /// Records in range (before the timestamp filter).
    pub(super) records: i64,
}

/// Finds, per partition, the range the warm start reads.
pub(super) fn plan(
    consumer: &BaseConsumer<Context>,
    learner: &mut Learner,
    capacity: u64,
) -> Result<Plan, String> {
    let now_ms = crate::clock::now_ms();
    let ttl_ms = i64::try_from(learner.dedup.ttl().as_millis()).unwrap_or(i64::MAX);
    let since = now_ms.saturating_sub(ttl_ms);
    let mut ranges = Vec::new();
    let mut query = TopicPartitionList::new();
    for (i, topic) in learner.topics.iter().enumerate() {
        let partitions = match partitions_of(consumer, &topic.name) {
            Ok(p) => p,
            // Nobody may have created the dead-letter topic yet: it
            // is followed once it exists.
            Err(e) if topic.destination == Destination::DeadLetter => {
                warn!(topic = %topic.name, reason = %e, "dedup warm start: the dead-letter topic is not readable; following it once it is");
                continue;
            }
            Err(e) => return Err(format!("topic {}: {e}", topic.name)),
        };
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic.name, p, REQUEST_TIMEOUT)
                .map_err(|e| format!("end offsets of {}[{p}]: {e}", topic.name))?;
            ranges.push((i, p, low, high));
            query
                .add_partition_offset(&topic.name, p, Offset::Offset(since))
                .map_err(|e| e.to_string())?;
        }
    }
    let found = if query.count() > 0 {
        consumer
            .offsets_for_times(query, REQUEST_TIMEOUT)
            .map_err(|e| format!("offsets by timestamp: {e}"))?
    } else {
        query
    };
    let mut starts = Vec::with_capacity(ranges.len());
    for &(i, p, low, high) in &ranges {
        let start = match found
            .find_partition(&learner.topics[i].name, p)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o.clamp(low, high),
            // Kafka answers "end" when no record is that young, but
            // some brokers answer it to every lookup (librdkafka's mock
            // cluster), so it is not trusted: the partition is read
            // (within its share of the capacity) and filtered by
            // timestamp, which costs little where Kafka was right.
            _ => low,
        };
        starts.push(start);
    }
    // More records than the memory holds: read each partition's newest
    // share, so the newest ids win.
    let total: i64 = ranges
        .iter()
        .zip(&starts)
        .map(|(&(.., high), &start)| high - start)
        .sum();
    let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
    if total > capacity {
        for (&(.., high), start) in ranges.iter().zip(starts.iter_mut()) {
            let share = i128::from(high - *start) * i128::from(capacity) / i128::from(total);
            *start = high - share as i64;
        }
    }
    let mut assignment = TopicPartitionList::new();
    let mut records = 0;
    for (&(i, p, _, high), &start) in ranges.iter().zip(&starts) {
        assignment
            .add_partition_offset(&learner.topics[i].name, p, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
        learner.topics[i].partitions.push(p);
        learner.progress.insert(
            (i, p),
            Progress {
                start,
                warm_end: high,
                last_timestamp_ms: None,
            },
        );
        records += high - start;
    }
    Ok(Plan {
        assignment,
        records,
    })
}
