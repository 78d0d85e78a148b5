//! The dedup follower's series (`dedup_*`): what it learned from the
//! topics, how far behind them it is, and the holds while Kafka could not
//! commit records.

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts,
};

/// The dedup follower's series.
#[derive(Clone)]
pub struct FollowerMetrics {
    pub enabled: IntGauge,
    pub ids_learned: IntCounterVec,
    pub warm_start_duration: Gauge,
    pub warm_start_budget_exceeded: IntGauge,
    pub lag_records: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub last_poll: Gauge,
    pub delay: Histogram,
    /// Holds: Kafka could not commit, claims refused until caught up.
    pub holds: IntCounter,
    pub behind: IntGauge,
}

/// Values of `dedup_ids_learned_total`'s `source` label.
pub mod learned {
    /// Read at start-up, before the replica became ready.
    pub const WARM_START: &str = "warm_start";
    /// Read while running: published by any replica since.
    pub const FOLLOWED: &str = "followed";
}

/// From a record's timestamp to its id being known here: dense below a
/// second, where the follower should be, and up to a minute for a lagging one.
const FOLLOWER_DELAY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl FollowerMetrics {
    /// The series, with every label value's series created at zero.
    pub(super) fn new() -> Self {
        let metrics = FollowerMetrics {
        enabled: IntGauge::new(
            "dedup_follower_enabled",
            "1 when the dedup memory is shared through Kafka (BRIDGE_DEDUP_FOLLOW)",
        )
        .expect("metric"),
        ids_learned: IntCounterVec::new(
            Opts::new(
                "dedup_ids_learned_total",
                "event_ids learned by reading the topics the bridge writes back, by source",
            ),
            &["source"],
        )
        .expect("metric"),
        warm_start_duration: Gauge::new(
            "dedup_warm_start_duration_seconds",
            "How long the warm start took, from Kafka answering to the memory being complete (0 until then)",
        )
        .expect("metric"),
        warm_start_budget_exceeded: IntGauge::new(
            "dedup_warm_start_budget_exceeded",
            "1 when the warm start ran out of BRIDGE_DEDUP_WARM_START_BUDGET_SECS and the replica became ready with an incomplete memory",
        )
        .expect("metric"),
        lag_records: IntGaugeVec::new(
            Opts::new(
                "dedup_follower_lag_records",
                "Records in the topic not yet read by this replica's follower",
            ),
            &["destination"],
        )
        .expect("metric"),
        lag_seconds: GaugeVec::new(
            Opts::new(
                "dedup_follower_lag_seconds",
                "While records are unread, the age of the last record read (0 when caught up)",
            ),
            &["destination"],
        )
        .expect("metric"),
        last_poll: Gauge::new(
            "dedup_follower_last_poll_timestamp_seconds",
            "Unix time of the follower's last poll (at least once a second while it runs)",
        )
        .expect("metric"),
        delay: Histogram::with_opts(
            HistogramOpts::new(
                "dedup_follower_delay_seconds",
                "From a followed record's timestamp to its event_id being known by this replica",
            )
            .buckets(FOLLOWER_DELAY_BUCKETS.to_vec()),
        )
        .expect("metric"),
        holds: IntCounter::new(
            "dedup_holds_total",
            "Times Kafka could not commit records (replicas in sync below min.insync.replicas) and claims were refused until the follower had read what Kafka committed on its return",
        )
        .expect("metric"),
        behind: IntGauge::new(
            "dedup_behind",
            "1 while claims are refused because Kafka cannot commit records or the follower has not yet read what it committed on its return",
        )
        .expect("metric"),
    };
        for d in crate::destination::Destination::ALL.map(|d| d.label()) {
            metrics.lag_records.with_label_values(&[d]);
            metrics.lag_seconds.with_label_values(&[d]);
        }
        for source in [learned::WARM_START, learned::FOLLOWED] {
            metrics.ids_learned.with_label_values(&[source]);
        }
        metrics
    }

    /// Every series, for the registry.
    pub(super) fn collectors(&self) -> [Box<dyn Collector>; 10] {
        [
            Box::new(self.enabled.clone()),
            Box::new(self.ids_learned.clone()),
            Box::new(self.warm_start_duration.clone()),
            Box::new(self.warm_start_budget_exceeded.clone()),
            Box::new(self.lag_records.clone()),
            Box::new(self.lag_seconds.clone()),
            Box::new(self.last_poll.clone()),
            Box::new(self.delay.clone()),
            Box::new(self.holds.clone()),
            Box::new(self.behind.clone()),
        ]
    }
}
