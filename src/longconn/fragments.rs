//! Reassembly of events that Feishu splits over several frames: frames of
//! one event share `message_id`, carry the count in `sum` and their 0-based
//! position in `seq`. A set that does not complete in time is dropped (and
//! counted); Feishu re-pushes an event it gets no ack for.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Labels of `long_connection_fragments_dropped_total`.
pub const DROP_REASONS: [&str; 3] = ["expired", "invalid", "too_large"];

/// Most fragments one event may claim; Feishu's events are kilobytes.
const MAX_SUM: usize = 1024;

pub struct Fragments {
    sets: HashMap<String, Set>,
    ttl: Duration,
    max_bytes: usize,
}

struct Set {
    parts: Vec<Option<Vec<u8>>>,
    have: usize,
    bytes: usize,
    expires: Instant,
}

/// What adding a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// The set is complete: the joined payload.
    Complete(Vec<u8>),
    Pending,
    /// The fragment was refused; its set (if any) is dropped.
    Dropped(&'static str),
}

impl Fragments {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        Fragments {
            sets: HashMap::new(),
            ttl,
            max_bytes,
        }
    }

    /// Adds fragment `seq` of `sum` of `message_id`. A repeated fragment
    /// replaces the earlier copy. Each fragment extends the set's life, as
    /// the official SDKs do.
    pub fn add(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        part: Vec<u8>,
        now: Instant,
    ) -> Added {
        if sum == 0 || sum > MAX_SUM || seq >= sum || message_id.is_empty() {
            self.sets.remove(message_id);
            return Added::Dropped("invalid");
        }
        let set = self
            .sets
            .entry(message_id.to_owned())
            .or_insert_with(|| Set {
                parts: vec![None; sum],
                have: 0,
                bytes: 0,
                expires: now,
            });
        if set.parts.len() != sum {
            self.sets.remove(message_id);
            return Added::Dropped("invalid");
        }
        set.expires = now + self.ttl;
        let len = part.len();
        match set.parts[seq].replace(part) {
            Some(old) => set.bytes -= old.len(),
            None => set.have += 1,
        }
        set.bytes += len;
        if set.bytes > self.max_bytes {
            self.sets.remove(message_id);
            return Added::Dropped("too_large");
        }
        if set.have < sum {
            return Added::Pending;
        }
        let set = self
            .sets
            .remove(message_id)
            .expect("the set was just updated");
        let mut joined = Vec::with_capacity(set.bytes);
        for part in set.parts.into_iter().flatten() {
            joined.extend_from_slice(&part);
        }
        Added::Complete(joined)
    }

    /// Drops the sets that have expired by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.sets.len();
        self.sets.retain(|_, s| s.expires > now);
        before - self.sets.len()
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_in_seq_order_whatever_the_arrival_order() {
        let now = Instant::now();
        let mut f = Fragments::new(Duration::from_secs(5), 1 << 20);
        assert_eq!(f.add("m", 3, 2, b"c".to_vec(), now), Added::Pending);
        assert_eq!(f.add("x", 2, 0, b"X".to_vec(), now), Added::Pending);
        assert_eq!(f.add("m", 3, 0, b"a".to_vec(), now), Added::Pending);
        assert_eq!(f.add("m", 3, 0, b"a".to_vec(), now), Added::Pending);
        assert_eq!(
            f.add("m", 3, 1, b"b".to_vec(), now),
            Added::Complete(b"abc".to_vec())
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f.add("x", 2, 1, b"Y".to_vec(), now),
            Added::Complete(b"XY".to_vec())
        );
        assert!(f.is_empty());
    }

    #[test]
    fn incomplete_sets_expire() {
        let now = Instant::now();
        let mut f = Fragments::new(Duration::from_secs(5), 1 << 20);
        f.add("m", 2, 0, b"a".to_vec(), now);
        assert_eq!(f.expire(now + Duration::from_secs(4)), 0);
        f.add("n", 2, 0, b"a".to_vec(), now + Duration::from_secs(4));
        assert_eq!(f.expire(now + Duration::from_secs(6)), 1);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn refuses_nonsense_and_oversize() {
        let now = Instant::now();
        let mut f = Fragments::new(Duration::from_secs(5), 4);
        assert_eq!(f.add("m", 2, 2, vec![], now), Added::Dropped("invalid"));
        assert_eq!(f.add("m", 0, 0, vec![], now), Added::Dropped("invalid"));
        assert_eq!(
            f.add("m", 100_000, 0, vec![], now),
            Added::Dropped("invalid")
        );
        f.add("m", 2, 0, b"ab".to_vec(), now);
        assert_eq!(
            f.add("m", 3, 1, b"c".to_vec(), now),
            Added::Dropped("invalid")
        );
        f.add("m", 2, 0, b"abc".to_vec(), now);
        assert_eq!(
            f.add("m", 2, 1, b"de".to_vec(), now),
            Added::Dropped("too_large")
        );
        assert!(f.is_empty());
    }
}
