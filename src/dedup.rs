//! Remembers which event_ids were published, and which are being published
//! right now, so that Feishu's retries and double deliveries reach Kafka at
//! most once while an id is remembered.
//!
//! An id enters the cache when its first copy starts publishing (state
//! *in flight*). Later copies wait on that state instead of publishing. The
//! owner settles it: on Kafka's ack the id becomes *published* and its TTL
//! restarts; on failure it is removed so that the next retry publishes.
//! Because the owner settles from a detached task, an id whose request
//! timed out stays in flight until Kafka decides, which is what makes a
//! late ack turn Feishu's next retry into a duplicate.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use tokio::sync::watch;

/// Outcome of the first copy of an event_id, as seen by later copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Published,
    Failed,
}

#[derive(Clone)]
enum Entry {
    InFlight(Arc<watch::Sender<Option<Settled>>>),
    Published,
}

/// Result of [`Dedup::claim`].
pub enum Claim {
    /// This request is the first copy: publish, then call [`Owner::settle`].
    Owner(Owner),
    /// Another copy is in flight; wait for its outcome.
    InFlight(watch::Receiver<Option<Settled>>),
    /// Already published.
    Published,
}

#[derive(Clone)]
pub struct Dedup {
    cache: Cache<String, Entry>,
}

impl Dedup {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Dedup {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Atomically claims `event_id`: exactly one concurrent caller becomes the owner.
    pub async fn claim(&self, event_id: &str) -> Claim {
        let (tx, _) = watch::channel(None);
        let tx = Arc::new(tx);
        let candidate = tx.clone();
        let result = self
            .cache
            .entry_by_ref(event_id)
            .and_compute_with(move |existing| {
                let op = match existing.map(|e| e.into_value()) {
                    Some(Entry::Published) => Op::Nop,
                    Some(Entry::InFlight(other)) if other.borrow().is_none() => Op::Nop,
                    // Absent, or a failed owner that has not removed itself yet.
                    _ => Op::Put(Entry::InFlight(candidate)),
                };
                std::future::ready(op)
            })
            .await;
        match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => Claim::Owner(Owner {
                cache: self.cache.clone(),
                event_id: event_id.to_owned(),
                tx,
                settled: false,
            }),
            CompResult::Unchanged(entry) => match entry.into_value() {
                Entry::Published => Claim::Published,
                Entry::InFlight(other) => Claim::InFlight(other.subscribe()),
            },
            // Op::Remove is never returned above; treat anything else as
            // "someone else owns it" rather than risk a double publish.
            CompResult::Removed(_) | CompResult::StillNone(_) => Claim::Published,
        }
    }

    /// Approximate number of remembered ids (in flight or published).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the cache's pending evictions so that [`Dedup::len`] is current.
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

/// The right, and the duty, to settle an event_id.
pub struct Owner {
    cache: Cache<String, Entry>,
    event_id: String,
    tx: Arc<watch::Sender<Option<Settled>>>,
    settled: bool,
}

impl Owner {
    pub async fn settle(mut self, outcome: Settled) {
        self.settled = true;
        let tx = self.tx.clone();
        let mine = move |e: &Entry| matches!(e, Entry::InFlight(t) if Arc::ptr_eq(t, &tx));
        let next = match outcome {
            Settled::Published => Some(Entry::Published),
            Settled::Failed => None,
        };
        // Only touch the entry if it is still ours: it may have been evicted
        // under capacity pressure and re-claimed by a later copy.
        self.cache
            .entry_by_ref(self.event_id.as_str())
            .and_compute_with(|existing| {
                let op = match (existing, next) {
                    (Some(e), Some(n)) if mine(e.value()) => Op::Put(n),
                    (Some(e), None) if mine(e.value()) => Op::Remove,
                    // Evicted while in flight and not re-claimed: remember the
                    // publish anyway, it is the cheaper mistake.
                    (None, Some(n)) => Op::Put(n),
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if !self.settled {
            // The publishing task ended without settling (it panicked or was
            // cancelled). Waiters must not hang; the stale entry is replaced
            // by the next claim because its state is Failed.
            self.tx.send_replace(Some(Settled::Failed));
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
        let Claim::Owner(owner) = d.claim("e1").await else {
            panic!("first claim must own")
        };
        let Claim::InFlight(rx) = d.claim("e1").await else {
            panic!("second claim must wait")
        };
        owner.settle(Settled::Published).await;
        assert_eq!(
            wait(rx, Duration::from_secs(1)).await,
            Some(Settled::Published)
        );
        assert!(matches!(d.claim("e1").await, Claim::Published));
    }

    #[tokio::test]
    async fn failure_releases_the_id() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e2").await else {
            panic!()
        };
        let Claim::InFlight(rx) = d.claim("e2").await else {
            panic!()
        };
        owner.settle(Settled::Failed).await;
        assert_eq!(
            wait(rx, Duration::from_secs(1)).await,
            Some(Settled::Failed)
        );
        assert!(matches!(d.claim("e2").await, Claim::Owner(_)));
    }

    #[tokio::test]
    async fn dropped_owner_does_not_strand_waiters_or_the_id() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e3").await else {
            panic!()
        };
        let Claim::InFlight(rx) = d.claim("e3").await else {
            panic!()
        };
        drop(owner);
        assert_eq!(
            wait(rx, Duration::from_secs(1)).await,
            Some(Settled::Failed)
        );
        assert!(matches!(d.claim("e3").await, Claim::Owner(_)));
    }

    #[tokio::test]
    async fn pending_wait_times_out_and_late_ack_counts() {
        let d = dedup();
        let Claim::Owner(owner) = d.claim("e4").await else {
            panic!()
        };
        let Claim::InFlight(rx) = d.claim("e4").await else {
            panic!()
        };
        assert_eq!(wait(rx, Duration::from_millis(20)).await, None);
        owner.settle(Settled::Published).await;
        assert!(matches!(d.claim("e4").await, Claim::Published));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_have_exactly_one_owner() {
        let d = dedup();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                match d.claim("same").await {
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

    #[tokio::test]
    async fn capacity_bounds_entries() {
        let d = Dedup::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            if let Claim::Owner(o) = d.claim(&format!("id-{i}")).await {
                o.settle(Settled::Published).await;
            }
        }
        d.sync().await;
        assert!(d.len() <= 100, "len {}", d.len());
    }
}
