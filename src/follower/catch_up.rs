//! Reading to the high watermark after Kafka could not commit records
//! ([`crate::dedup::Position`]): once the cluster commits again, records
//! that some replica's producer appended while it could not (and whose
//! requests Feishu saw fail) become visible all at once. Claims stay
//! refused until the follower has read every partition up to the high
//! watermark it finds then.
//!
//! The watermark is asked again after it is reached: a replica that rejoins
//! the in-sync set shows in metadata a moment before the leader moves the
//! watermark over the records it held back, so one answer taken right after
//! the return may fall short of them. The memory opens when a watermark
//! asked at least [`SETTLE`] after the return has been read and a new
//! question finds it unchanged (or after [`ROUNDS`] questions, as other
//! replicas that opened already keep writing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tracing::{info, warn};

use super::Follower;

/// How long after the return the last watermark must be asked.
const SETTLE: Duration = Duration::from_secs(1);
/// Watermarks asked at most, per catch-up.
const ROUNDS: u32 = 4;
/// How often the positions are compared with the watermark.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Each followed partition's high watermark, by (topic index, partition).
type Watermarks = HashMap<(usize, i32), i64>;

/// A catch-up under way.
pub(super) struct CatchUp {
    generation: u64,
    began: Instant,
    target: Watermarks,
    rounds: u32,
    checked: Instant,
}

impl Follower {
    /// One step of the catch-up the dedup memory asks for, if any: cheap
    /// (one atomic load) when none is wanted.
    pub(super) fn catch_up_step(&self, state: &mut Option<CatchUp>) {
        let Some(generation) = self.learner.dedup.catch_up_wanted() else {
            *state = None;
            return;
        };
        let current = match state.take() {
            Some(c) if c.generation == generation => c,
            _ => {
                let Some(target) = self.high_watermarks() else {
                    return;
                };
                CatchUp {
                    generation,
                    began: Instant::now(),
                    target,
                    rounds: 1,
                    checked: Instant::now(),
                }
            }
        };
        *state = self.advance(current);
    }

    /// `None` once the memory opened.
    fn advance(&self, mut c: CatchUp) -> Option<CatchUp> {
        if c.checked.elapsed() < CHECK_EVERY || !self.has_read_to(&c.target) {
            return Some(c);
        }
        c.checked = Instant::now();
        if c.began.elapsed() < SETTLE {
            return Some(c);
        }
        let now = self.high_watermarks()?;
        if now != c.target && c.rounds < ROUNDS {
            c.target = now;
            c.rounds += 1;
            return Some(c);
        }
        if self.learner.dedup.caught_up(c.generation) {
            self.learner.metrics.follower.behind.set(0);
            info!(
                took_ms = c.began.elapsed().as_millis() as u64,
                watermarks_asked = c.rounds,
                "dedup memory caught up with what kafka committed on its return: claims are answered again"
            );
        }
        None
    }

    /// Every followed partition's high watermark, or `None` (and a warning)
    /// when one cannot be asked: the next step asks again.
    fn high_watermarks(&self) -> Option<Watermarks> {
        let mut marks = Watermarks::new();
        for (i, topic) in self.learner.topics.iter().enumerate() {
            for &p in &topic.partitions {
                match self
                    .consumer
                    .fetch_watermarks(&topic.name, p, super::REQUEST_TIMEOUT)
                {
                    Ok((_, high)) => {
                        marks.insert((i, p), high);
                    }
                    Err(e) => {
                        warn!(topic = %topic.name, partition = p, error = %e, "dedup catch-up: cannot ask the high watermark; asking again");
                        return None;
                    }
                }
            }
        }
        Some(marks)
    }

    /// Whether every partition has been read up to `target`.
    fn has_read_to(&self, target: &Watermarks) -> bool {
        let Ok(positions) = self.consumer.position() else {
            return false;
        };
        target.iter().all(|(&(i, p), &high)| {
            // No position yet: nothing read since the assignment's start.
            let at = positions
                .find_partition(&self.learner.topics[i].name, p)
                .and_then(|e| e.offset().to_raw())
                .filter(|&o| o >= 0)
                .or_else(|| self.learner.progress.get(&(i, p)).map(|pr| pr.start))
                .unwrap_or(0);
            at >= high
        })
    }
}
