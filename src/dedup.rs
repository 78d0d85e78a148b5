//! Remembers which event_ids were published, and which are being published
//! right now, so that Feishu's retries and double deliveries reach Kafka at
//! most once while an id is remembered.
//!
//! An id is *in flight* from the moment its first copy starts publishing:
//! later copies wait on its outcome instead of publishing. The owner settles
//! it: on Kafka's ack the id moves to the *published* cache, remembered for
//! the TTL from then on; on failure it is forgotten so that the next retry
//! publishes. Because the owner settles from a detached task, an id whose
//! request timed out stays in flight until Kafka decides, which is what makes
//! a late ack turn Feishu's next retry into a duplicate.
//!
//! Memory: ids are kept as 128-bit keyed hashes, and published ids live in a
//! `quick_cache` (S3-FIFO eviction, a few words per entry) bounded by the
//! capacity; expiry is checked when an id is looked up, and expired entries
//! are evicted like any other. In-flight ids sit in a small map whose size
//! is bounded by the requests in progress.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Outcome of the first copy of an event_id, as seen by later copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Published,
    Failed,
}

type Slot = Arc<watch::Sender<Option<Settled>>>;

/// Result of [`Dedup::claim`].
pub enum Claim {
    /// This request is the first copy: publish, then call [`Owner::settle`].
    Owner(Owner),
    /// Another copy is in flight; wait for its outcome.
    InFlight(watch::Receiver<Option<Settled>>),
    /// Already published.
    Published,
}

struct Inner {
    /// Published ids → the second (since `epoch`) at which they expire.
    published: quick_cache::sync::Cache<u128, u32>,
    in_flight: Mutex<HashMap<u128, Slot>>,
    /// Two independent keys: a 128-bit hash makes an accidental collision
    /// (which would drop an event as a "duplicate") negligible.
    hashers: (RandomState, RandomState),
    epoch: Instant,
    ttl_secs: u32,
}

#[derive(Clone)]
pub struct Dedup {
    inner: Arc<Inner>,
}

impl Dedup {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        Dedup {
            inner: Arc::new(Inner {
                published: quick_cache::sync::Cache::new(capacity),
                in_flight: Mutex::new(HashMap::new()),
                hashers: (RandomState::new(), RandomState::new()),
                epoch: Instant::now(),
                ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            }),
        }
    }

    /// Atomically claims `event_id`: exactly one concurrent caller becomes the owner.
    pub fn claim(&self, event_id: &str) -> Claim {
        let key = self.inner.key(event_id);
        let mut in_flight = self.inner.lock();
        if let Some(slot) = in_flight.get(&key) {
            if slot.borrow().is_none() {
                return Claim::InFlight(slot.subscribe());
            }
            // A failed owner that has not removed itself yet: replace it.
        }
        if self.inner.is_published(key) {
            return Claim::Published;
        }
        let (tx, _) = watch::channel(None);
        let slot: Slot = Arc::new(tx);
        in_flight.insert(key, slot.clone());
        Claim::Owner(Owner {
            dedup: self.clone(),
            key,
            slot,
            settled: false,
        })
    }

    /// Ids remembered (published, possibly expired but not yet evicted) or in flight.
    pub fn len(&self) -> u64 {
        (self.inner.published.len() + self.inner.lock().len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn key(&self, event_id: &str) -> u128 {
        let hi = self.hashers.0.hash_one(event_id) as u128;
        let lo = self.hashers.1.hash_one(event_id) as u128;
        (hi << 64) | lo
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn is_published(&self, key: u128) -> bool {
        self.published
            .get(&key)
            .is_some_and(|expires| expires > self.now_secs())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u128, Slot>> {
        // Nothing panics while holding the lock; if something ever did, the
        // map is still consistent, so keep using it.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends `slot`'s ownership of `key`, recording a publish first so that
    /// no claim can find the id neither in flight nor published.
    fn release(&self, key: u128, slot: &Slot, outcome: Settled) {
        let mut in_flight = self.lock();
        if outcome == Settled::Published {
            self.published
                .insert(key, self.now_secs().saturating_add(self.ttl_secs));
        }
        if in_flight.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            in_flight.remove(&key);
        }
        drop(in_flight);
        slot.send_replace(Some(outcome));
    }
}

/// The right, and the duty, to settle an event_id.
pub struct Owner {
    dedup: Dedup,
    key: u128,
    slot: Slot,
    settled: bool,
}

impl Owner {
    pub fn settle(mut self, outcome: Settled) {
        self.settled = true;
        self.dedup.inner.release(self.key, &self.slot, outcome);
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if !self.settled {
            // The publishing task ended without settling (it panicked or was
            // cancelled): waiters must not hang, and the next copy may publish.
            self.dedup
                .inner
                .release(self.key, &self.slot, Settled::Failed);
        }
    }
}

/// Waits for an in-flight copy to settle, for at most `deadline`.
/// `None` means it is still in flight.
pub async fn wait(mut rx: watch::Receiver<Option<Settled>>, deadline: Duration) -> Option<Settled> {
    let settled = tokio::time::timeout(deadline, rx.wait_for(Option::is_some)).await;
    match settled {
        Ok(Ok(state)) => *state,
        // The sender vanished without settling: treat as failed so that the
        // caller answers non-2xx and Feishu retries.
        Ok(Err(_)) => Some(Settled::Failed),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedup() -> Dedup {
        Dedup::new(Duration::from_secs(60), 1000)
    }

    #[tokio::test]
    async fn first_claim_owns_then_duplicate_after_publish() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e1") else {
            panic!("first claim must own")
        };
        let Claim::InFlight(rx) = d.claim("e1") else {
            panic!("second claim must wait")
        };
        owner.settle(Settled::Published);
        assert_eq!(
            wait(rx, Duration::from_secs(1)).await,
            Some(Settled::Published)
        );
        assert!(matches!(d.claim("e1"), Claim::Published));
        assert!(matches!(d.claim("e1-other"), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn failure_releases_the_id() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e2") else {
            panic!()
        };
        let Claim::InFlight(rx) = d.claim("e2") else {
            panic!()
        };
        owner.settle(Settled::Failed);
        assert_eq!(
            wait(rx, Duration::from_secs(1)).await,
            Some(Settled::Failed)
        );
        assert!(matches!(d.claim("e2"), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn dropped_owner_does_not_strand_waiters_or_the_id() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e3") else {
            panic!()
        };
        let Claim::InFlight(rx) = d.claim("e3") else {
            panic!()
        };
        drop(owner);
        assert_eq!(
            wait(rx, Duration::from_secs(1)).await,
            Some(Settled::Failed)
        );
        assert!(matches!(d.claim("e3"), Claim::Owner(_)));
    }

    #[tokio::test]
    async fn pending_wait_times_out_and_late_ack_counts() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e4") else {
            panic!()
        };
        let Claim::InFlight(rx) = d.claim("e4") else {
            panic!()
        };
        assert_eq!(wait(rx, Duration::from_millis(20)).await, None);
        owner.settle(Settled::Published);
        assert!(matches!(d.claim("e4"), Claim::Published));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_have_exactly_one_owner() {
        let d = dedup();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                match d.claim("same") {
                    Claim::Owner(o) => Some(o),
                    _ => None,
                }
            }));
        }
        // Owners are kept alive until every claim is done, so a second owner
        // could only appear through a race in `claim`.
        let mut owners = Vec::new();
        for t in tasks {
            owners.extend(t.await.unwrap());
        }
        assert_eq!(owners.len(), 1);
    }

    #[test]
    fn expired_ids_are_forgotten() {
        let d = Dedup::new(Duration::ZERO, 10);
        let Claim::Owner(o) = d.claim("e5") else {
            panic!()
        };
        o.settle(Settled::Published);
        // TTL 0: expired at once, so a retry publishes again.
        assert!(matches!(d.claim("e5"), Claim::Owner(_)));
    }

    #[test]
    fn capacity_bounds_entries() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            if let Claim::Owner(o) = d.claim(&format!("id-{i}")) {
                o.settle(Settled::Published);
            }
        }
        assert!(d.len() <= 100, "len {}", d.len());
    }
}
