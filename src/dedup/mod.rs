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
//! Memory: ids are kept as 128-bit keyed hashes. Published ids live in
//! [`Remembered`], a sharded map plus insertion-order queue bounded by the
//! capacity: every id lives for the same TTL, so the oldest id is also the
//! next to expire, and when the capacity is reached the one evicted is the
//! one closest to being forgotten anyway. (A general-purpose cache was used
//! first and was wrong for this: S3-FIFO keeps ids that are looked up often
//! and evicts fresh ones nobody asked for yet, which are exactly the ids
//! whose retries are still to come; the benchmark's 20%-duplicate sweep
//! found re-published duplicates once the cache was full.) Expired ids are
//! dropped from the queue's head as new ones arrive. In-flight ids sit in a
//! small map whose size is bounded by the requests in progress.
//!
//! Ids also come from outside this process: the follower
//! (`crate::follower`) reads back what every replica wrote to Kafka and
//! [`Dedup::learn`]s each id with an expiry counted from the record's
//! timestamp. Until its warm start has read the topics, the memory is
//! *incomplete* ([`Dedup::incomplete`]) and a claim answers
//! [`Claim::Incomplete`]: it cannot tell a retry from a first delivery.
//! The same holds while Kafka cannot commit records and until the follower
//! has read what the cluster committed on its return ([`behind`]): a claim
//! then answers [`Claim::Behind`].

mod behind;
mod remembered;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use behind::Behind;
pub use behind::Position;
use remembered::Remembered;

/// What the memory tells apart: Feishu's event ids are unique per app (two
/// apps' copies of one change are two events, with ids that may as well
/// collide), so an id is remembered within its app (`header.app_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKey<'a> {
    pub app_id: &'a str,
    pub event_id: &'a str,
}

/// An id of an envelope that names no app.
impl<'a> From<&'a str> for EventKey<'a> {
    fn from(event_id: &'a str) -> Self {
        EventKey {
            app_id: "",
            event_id,
        }
    }
}

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
    /// The memory is still being read back from Kafka: whether this id was
    /// published is unknown, so it must not be published now.
    Incomplete,
    /// Kafka could not commit records lately, and the records it commits
    /// on its return are not all read yet: the same unknown.
    Behind,
}

struct Inner {
    published: Remembered,
    in_flight: Mutex<HashMap<u128, Slot>>,
    /// Two independent keys: a 128-bit hash makes an accidental collision
    /// (which would drop an event as a "duplicate") negligible.
    hashers: (RandomState, RandomState),
    epoch: Instant,
    ttl_secs: u32,
    /// False until the warm start has read the topics back. Every claim
    /// reads it, so it is a plain atomic; `completed` carries the same fact
    /// to the few that wait for it (the long connection before dialling).
    complete: AtomicBool,
    completed: watch::Sender<bool>,
    /// Whether a follower feeds the memory (it can catch up with the log).
    followed: bool,
    behind: Behind,
}

#[derive(Clone)]
pub struct Dedup {
    inner: Arc<Inner>,
}

impl Dedup {
    /// A memory that starts empty and complete: only this process feeds it.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self::build(ttl, capacity, true)
    }

    /// A memory that refuses claims until [`Dedup::mark_complete`]: the
    /// follower's warm start fills it first.
    pub fn incomplete(ttl: Duration, capacity: u64) -> Self {
        Self::build(ttl, capacity, false)
    }

    fn build(ttl: Duration, capacity: u64, complete: bool) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        Dedup {
            inner: Arc::new(Inner {
                published: Remembered::new(capacity),
                in_flight: Mutex::new(HashMap::new()),
                hashers: (RandomState::new(), RandomState::new()),
                epoch: Instant::now(),
                ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
                complete: AtomicBool::new(complete),
                completed: watch::channel(complete).0,
                followed: !complete,
                behind: Behind::default(),
            }),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.inner.complete.load(Ordering::Acquire)
    }

    /// From now on claims are answered (the warm start finished or gave up).
    pub fn mark_complete(&self) {
        self.inner.complete.store(true, Ordering::Release);
        self.inner.completed.send_replace(true);
    }

    /// Resolves once the memory is complete.
    pub async fn wait_complete(&self) {
        let mut rx = self.inner.completed.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|complete| *complete).await;
    }

    /// Remembers an id that some replica published, until `expires_at`
    /// (wall-clock: the record's timestamp plus the TTL). Returns false
    /// when it has already expired and was not remembered.
    pub fn learn<'a>(&self, id: impl Into<EventKey<'a>>, expires_at: SystemTime) -> bool {
        let left = match expires_at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => left,
            _ => return false,
        };
        let now = self.inner.now_secs();
        // Rounded up: an id is forgotten no earlier than its record says.
        let left_secs =
            u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        let key = self.inner.key(id.into());
        self.inner
            .published
            .insert(key, now.saturating_add(left_secs), now);
        true
    }

    /// The TTL ids are remembered for.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.inner.ttl_secs))
    }

    /// Atomically claims an event: exactly one concurrent caller becomes the owner.
    pub fn claim<'a>(&self, id: impl Into<EventKey<'a>>) -> Claim {
        let key = self.inner.key(id.into());
        // An id known to be published is a duplicate even while the memory
        // cannot vouch for the ids it does not know.
        if !self.is_complete() || self.inner.behind.is_behind() {
            return if self.inner.is_published(key) {
                Claim::Published
            } else if !self.is_complete() {
                Claim::Incomplete
            } else {
                Claim::Behind
            };
        }
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

    /// Kafka cannot commit records: claims are refused from now on. True
    /// when this starts a hold.
    pub fn hold(&self) -> bool {
        self.inner.behind.hold()
    }

    /// Kafka commits again: claims stay refused until the follower has read
    /// every partition to its high watermark ([`Dedup::caught_up`]), or are
    /// answered at once when no follower feeds this memory. True when this
    /// ends a hold.
    pub fn catch_up(&self) -> bool {
        if self.inner.followed {
            self.inner.behind.catch_up()
        } else {
            self.inner.behind.release()
        }
    }

    /// The catch-up the follower owes, by generation.
    pub fn catch_up_wanted(&self) -> Option<u64> {
        self.inner.behind.wanted()
    }

    /// The follower read to the high watermark for `generation`: claims are
    /// answered again unless a newer hold began. True when it opened.
    pub fn caught_up(&self, generation: u64) -> bool {
        self.inner.behind.caught_up(generation)
    }

    pub fn position(&self) -> Position {
        self.inner.behind.position()
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
    fn key(&self, id: EventKey<'_>) -> u128 {
        // A tuple of strs hashes each with its end marked: ("a", "bc") and
        // ("ab", "c") are different keys.
        let parts = (id.app_id, id.event_id);
        let hi = self.hashers.0.hash_one(parts) as u128;
        let lo = self.hashers.1.hash_one(parts) as u128;
        (hi << 64) | lo
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn is_published(&self, key: u128) -> bool {
        self.published.contains(key, self.now_secs())
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
            let now = self.now_secs();
            self.published
                .insert(key, now.saturating_add(self.ttl_secs), now);
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
            if let Claim::Owner(o) = d.claim(format!("id-{i}").as_str()) {
                o.settle(Settled::Published);
            }
        }
        assert!(d.len() <= 100, "len {}", d.len());
    }

    /// At capacity the oldest id goes, never a fresh one: a retry soon
    /// after a publish must still find it.
    #[test]
    fn full_cache_evicts_the_oldest_id() {
        for capacity in [100u64, 100_000] {
            let d = Dedup::new(Duration::from_secs(60), capacity);
            let n = capacity * 3;
            for i in 0..n {
                if let Claim::Owner(o) = d.claim(format!("id-{i}").as_str()) {
                    o.settle(Settled::Published);
                }
            }
            assert_eq!(d.len(), capacity);
            // The most recent ids are all remembered (sharding leaves a
            // shard's share of the capacity a little uneven: allow 5%)...
            for i in (n - capacity * 95 / 100)..n {
                assert!(
                    matches!(d.claim(format!("id-{i}").as_str()), Claim::Published),
                    "id-{i}"
                );
            }
            // ...and the oldest are not.
            assert!(matches!(d.claim("id-0"), Claim::Owner(_)));
        }
    }

    #[tokio::test]
    async fn incomplete_memory_refuses_claims_until_marked() {
        let d = Dedup::incomplete(Duration::from_secs(60), 100);
        assert!(matches!(d.claim("e6"), Claim::Incomplete));
        assert!(d.learn("e6", SystemTime::now() + Duration::from_secs(30)));
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait_complete().await }
        });
        d.mark_complete();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("wait_complete resolves")
            .unwrap();
        assert!(matches!(d.claim("e6"), Claim::Published));
        assert!(matches!(d.claim("e7"), Claim::Owner(_)));
    }

    #[test]
    fn an_event_id_is_remembered_within_its_app() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        let a = EventKey {
            app_id: "cli_a",
            event_id: "e",
        };
        let b = EventKey {
            app_id: "cli_b",
            event_id: "e",
        };
        let Claim::Owner(o) = d.claim(a) else {
            panic!("first claim owns")
        };
        o.settle(Settled::Published);
        assert!(matches!(d.claim(a), Claim::Published));
        assert!(matches!(d.claim(b), Claim::Owner(_)));
        assert!(matches!(d.claim("e"), Claim::Owner(_)));
        // The app and the id are not one string joined.
        let joined = EventKey {
            app_id: "cli_",
            event_id: "ae2",
        };
        assert!(d.learn(joined, SystemTime::now() + Duration::from_secs(30)));
        assert!(matches!(
            d.claim(EventKey {
                app_id: "cli_a",
                event_id: "e2"
            }),
            Claim::Owner(_)
        ));
    }

    #[test]
    fn learned_ids_expire_from_the_record_timestamp() {
        let d = dedup();
        // A record whose TTL ran out already is not remembered at all.
        assert!(!d.learn("old", SystemTime::now() - Duration::from_secs(1)));
        assert!(matches!(d.claim("old"), Claim::Owner(_)));
        // One with a little time left is remembered for that time only.
        assert!(d.learn("young", SystemTime::now() + Duration::from_millis(1500)));
        assert!(matches!(d.claim("young"), Claim::Published));
        std::thread::sleep(Duration::from_millis(2100));
        assert!(matches!(d.claim("young"), Claim::Owner(_)));
    }

    #[test]
    fn learning_a_published_id_keeps_the_later_expiry() {
        let d = dedup();
        let Claim::Owner(o) = d.claim("mine") else {
            panic!()
        };
        o.settle(Settled::Published);
        // The follower reads the replica's own record back with an older
        // timestamp: the id must stay remembered for the full TTL.
        assert!(d.learn("mine", SystemTime::now() + Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(2100));
        assert!(matches!(d.claim("mine"), Claim::Published));
        assert_eq!(d.len(), 1);
    }
}
