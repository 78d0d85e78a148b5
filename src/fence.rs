//! Claims wait while Kafka cannot commit records, and until the dedup
//! memory has read what it committed on its return.
//!
//! Why: a record that a replica's producer handed to the partition leader
//! just before the in-sync replicas fell below `min.insync.replicas` is in
//! the leader's log but not committed: no consumer sees it, and the producer
//! gives up on it after its message timeout (10 s), so Feishu hears 503 and
//! delivers the event again, perhaps to another replica. When the cluster
//! commits again, that first copy becomes visible. A retry published before
//! the follower has read it would be the event's second record (measured on
//! a three-broker cluster with two brokers stopped under load:
//! tests/apache_kafka_faults.rs). So while any written partition cannot
//! commit, claims are refused at once (503, nothing enqueued); on the
//! return, the follower reads every partition to its high watermark
//! (`crate::follower`) before claims are answered again.
//!
//! Readiness drives it: its metadata answer says every couple of seconds
//! whether each partition has a leader and enough replicas in sync
//! (`crate::sink::Writable::commits`).

use tracing::{info, warn};

use crate::dedup::{Dedup, Position};
use crate::metrics::Metrics;

/// Holds or releases claims after readiness's answer; `commits` is `None`
/// when metadata did not answer (nothing changes then).
pub fn observe(dedup: &Dedup, commits: Option<&Result<(), String>>, metrics: &Metrics) {
    match commits {
        Some(Err(why)) if dedup.hold() => {
            metrics.follower.holds.inc();
            warn!(reason = %why, "kafka cannot commit records: claims are refused (503) until it can and the dedup memory has read what it committed");
        }
        Some(Ok(())) if dedup.catch_up() => match dedup.position() {
            Position::CaughtUp => {
                info!("kafka commits again: claims are answered again (no follower to catch up)")
            }
            _ => info!("kafka commits again: the follower reads the topics to their high watermark before claims are answered"),
        },
        _ => {}
    }
    metrics
        .follower
        .behind
        .set(i64::from(dedup.position() != Position::CaughtUp));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_followed_memory_stays_behind_until_the_follower_caught_up() {
        let metrics = Metrics::new();
        let dedup = Dedup::incomplete(Duration::from_secs(60), 100);
        dedup.mark_complete();
        observe(&dedup, Some(&Err("m[0] 1 of 3".into())), &metrics);
        assert_eq!(dedup.position(), Position::Held);
        assert!(matches!(dedup.claim("e"), crate::dedup::Claim::Behind));
        observe(&dedup, None, &metrics);
        assert_eq!(
            dedup.position(),
            Position::Held,
            "no answer changes nothing"
        );
        observe(&dedup, Some(&Ok(())), &metrics);
        assert_eq!(dedup.position(), Position::CatchingUp);
        assert_eq!(metrics.follower.behind.get(), 1);
        assert_eq!(metrics.follower.holds.get(), 1);
        let generation = dedup.catch_up_wanted().unwrap();
        assert!(dedup.caught_up(generation));
        assert!(matches!(dedup.claim("e"), crate::dedup::Claim::Owner(_)));
    }

    #[test]
    fn an_unfollowed_memory_opens_when_kafka_commits_again() {
        let metrics = Metrics::new();
        let dedup = Dedup::new(Duration::from_secs(60), 100);
        observe(&dedup, Some(&Err("m[0] 1 of 3".into())), &metrics);
        assert!(matches!(dedup.claim("e"), crate::dedup::Claim::Behind));
        observe(&dedup, Some(&Ok(())), &metrics);
        assert_eq!(dedup.position(), Position::CaughtUp);
        assert_eq!(metrics.follower.behind.get(), 0);
    }
}
