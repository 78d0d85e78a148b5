//! What the follower knows of the topics it reads, and how a record it
//! reads becomes an id in the dedup memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::cloudevents;
use crate::dedup::{Dedup, EventKey};
use crate::destination::Destination;
use crate::metrics::{learned, Metrics};

/// A topic the follower reads.
pub(super) struct Watched {
    pub(super) name: String,
    pub(super) destination: Destination,
    /// Partitions assigned so far.
    pub(super) partitions: Vec<i32>,
}

/// Per partition: where the warm start ends, and the last record read.
#[derive(Default)]
pub(super) struct Progress {
    /// Where the warm start began reading.
    pub(super) start: i64,
    /// The end offset seen at start-up; records below it belong to the warm start.
    pub(super) warm_end: i64,
    /// Timestamp (ms) of the last record read, for the lag in seconds.
    pub(super) last_timestamp_ms: Option<i64>,
}

/// What the follower knows of its partitions, and where ids go: apart from
/// the consumer so that a record borrowed from it can be taken in.
pub(super) struct Learner {
    pub(super) topics: Vec<Watched>,
    pub(super) progress: HashMap<(usize, i32), Progress>,
    pub(super) dedup: Dedup,
    pub(super) metrics: Metrics,
}

impl Learner {
    /// Learns the id a record carries; true when it was remembered.
    pub(super) fn take(&mut self, msg: &BorrowedMessage<'_>) -> bool {
        let Some(i) = self.topics.iter().position(|t| t.name == msg.topic()) else {
            return false;
        };
        let timestamp_ms = msg.timestamp().to_millis();
        let progress = self.progress.entry((i, msg.partition())).or_default();
        progress.last_timestamp_ms = timestamp_ms.or(progress.last_timestamp_ms);
        let warm = msg.offset() < progress.warm_end;
        let Some(event_id) = header(msg, "event_id") else {
            return false;
        };
        let app = app_id(msg);
        let key = EventKey {
            app_id: &app,
            event_id,
        };
        // A record without a timestamp counts as written now.
        let written = timestamp_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .unwrap_or_else(SystemTime::now);
        if !self.dedup.learn(key, written + self.dedup.ttl()) {
            return false;
        }
        let f = &self.metrics.follower;
        if warm {
            f.ids_learned
                .with_label_values(&[learned::WARM_START])
                .inc();
        } else {
            f.ids_learned.with_label_values(&[learned::FOLLOWED]).inc();
            if let Ok(delay) = SystemTime::now().duration_since(written) {
                f.delay.observe(delay.as_secs_f64());
            }
        }
        true
    }
}

/// A non-empty header of a record the bridge wrote; `None` for a record
/// without it (`event_id`: a dead letter of an event that had none, or a
/// record some other producer wrote).
fn header<'a>(msg: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|value| !value.is_empty())
}

/// The app whose event a record is, as the pipeline keyed it
/// (`header.app_id`, empty when the envelope had none): the `app_id`
/// header, or for records written before that header existed, the app in
/// `ce_source` (`/feishu/apps/<app_id>`, which they all carry), so that an
/// upgrade does not forget the ids its predecessor published.
fn app_id<'a>(msg: &'a BorrowedMessage<'_>) -> Cow<'a, str> {
    if let Some(app) = header(msg, "app_id") {
        return Cow::Borrowed(app);
    }
    header(msg, "ce_source")
        .and_then(cloudevents::app_of_source)
        .unwrap_or(Cow::Borrowed(""))
}
