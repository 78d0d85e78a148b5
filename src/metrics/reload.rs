//! The series of secret files read again while running (`secret_reload*`):
//! whether a changed file was applied, and whether the files on disk are
//! currently unusable (the running secrets stay until they are fixed).

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGauge, Opts};

/// Values of `secret_reloads_total`'s `outcome` label.
pub mod reload_outcome {
    /// The files changed and the new secrets are in use.
    pub const APPLIED: &str = "applied";
    /// The files changed but cannot be used (unreadable, empty, a previous
    /// value without a current one): the running secrets stay.
    pub const FAILED: &str = "failed";
    pub const ALL: [&str; 2] = [APPLIED, FAILED];
}

#[derive(Clone)]
pub struct ReloadMetrics {
    pub reloads: IntCounterVec,
    pub failing: IntGauge,
}

impl ReloadMetrics {
    /// The series, every outcome's at zero.
    pub(super) fn new() -> Self {
        let metrics = ReloadMetrics {
            reloads: IntCounterVec::new(
                Opts::new(
                    "secret_reloads_total",
                    "Changes of the callback's secret files seen while running, by outcome (applied, or failed: the running secrets stay)",
                ),
                &["outcome"],
            )
            .expect("metric"),
            failing: IntGauge::new(
                "secret_reload_failing",
                "1 while the callback's secret files on disk cannot be used (the running secrets stay); 0 otherwise",
            )
            .expect("metric"),
        };
        for outcome in reload_outcome::ALL {
            metrics.reloads.with_label_values(&[outcome]);
        }
        metrics
    }

    pub(super) fn collectors(&self) -> impl Iterator<Item = Box<dyn Collector>> {
        [
            Box::new(self.reloads.clone()) as Box<dyn Collector>,
            Box::new(self.failing.clone()),
        ]
        .into_iter()
    }
}
