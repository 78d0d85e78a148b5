//! The snapshots' metrics (names are public: docs/operations.md).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::metrics::Metrics;
use crate::record::Trigger;

/// Every `outcome` of `snapshots_total`.
pub const OUTCOMES: [&str; 2] = ["published", "failed"];

#[derive(Clone)]
pub struct SnapshotMetrics {
    snapshots: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
}

impl SnapshotMetrics {
    /// Creates the series (at 0) and registers them with `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let snapshots = IntCounterVec::new(
            Opts::new(
                "snapshots_total",
                "Chat membership snapshots by trigger (bot_added, command, admin) and outcome (published, failed)",
            ),
            &["trigger", "outcome"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "snapshot_duration_seconds",
                "Time to list a chat's members and publish its snapshot, by trigger",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["trigger"],
        )
        .expect("metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "snapshot_retries_total",
                "Listings of a chat's members retried after a retriable failure, by trigger",
            ),
            &["trigger"],
        )
        .expect("metric");
        for t in Trigger::ALL.map(Trigger::as_str) {
            for o in OUTCOMES {
                snapshots.with_label_values(&[t, o]);
            }
            duration.with_label_values(&[t]);
            retries.with_label_values(&[t]);
        }
        metrics.register(Box::new(snapshots.clone()));
        metrics.register(Box::new(duration.clone()));
        metrics.register(Box::new(retries.clone()));
        SnapshotMetrics {
            snapshots,
            duration,
            retries,
        }
    }

    pub(super) fn done(&self, trigger: Trigger, published: bool, took: std::time::Duration) {
        let outcome = if published { OUTCOMES[0] } else { OUTCOMES[1] };
        self.snapshots
            .with_label_values(&[trigger.as_str(), outcome])
            .inc();
        self.duration
            .with_label_values(&[trigger.as_str()])
            .observe(took.as_secs_f64());
    }

    pub(super) fn retried(&self, trigger: Trigger) {
        self.retries.with_label_values(&[trigger.as_str()]).inc();
    }
}
