//! The OpenAPI client's metrics (names are public: docs/operations.md).

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use super::api;
use crate::metrics::Metrics;

/// Every `outcome` of `openapi_calls_total`.
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "rate_limited",
    "token_renewed",
    "retriable",
    "permanent",
    "auth",
];

#[derive(Clone)]
pub struct OpenApiMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
    rate_limit_waits: IntCounterVec,
}

impl OpenApiMetrics {
    /// Creates the series (at 0) and registers them with `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let calls = IntCounterVec::new(
            Opts::new(
                "openapi_calls_total",
                "Calls to Feishu's OpenAPI by API and outcome (ok, rate_limited, token_renewed, retriable, permanent, auth)",
            ),
            &["api", "outcome"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "openapi_call_duration_seconds",
                "Duration of one call to Feishu's OpenAPI, by API",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["api"],
        )
        .expect("metric");
        let rate_limit_waits = IntCounterVec::new(
            Opts::new(
                "openapi_rate_limit_waits_total",
                "Times a call waited because Feishu said the API's frequency limit was hit",
            ),
            &["api"],
        )
        .expect("metric");
        for a in api::ALL {
            for o in OUTCOMES {
                calls.with_label_values(&[a, o]);
            }
            duration.with_label_values(&[a]);
            rate_limit_waits.with_label_values(&[a]);
        }
        metrics.register(Box::new(calls.clone()));
        metrics.register(Box::new(duration.clone()));
        metrics.register(Box::new(rate_limit_waits.clone()));
        OpenApiMetrics {
            calls,
            duration,
            rate_limit_waits,
        }
    }

    pub(super) fn count(&self, api: &str, outcome: &str) {
        self.calls.with_label_values(&[api, outcome]).inc();
    }

    pub(super) fn observe(&self, api: &str, took: Duration) {
        self.duration
            .with_label_values(&[api])
            .observe(took.as_secs_f64());
    }

    pub(super) fn rate_limit_wait(&self, api: &str) {
        self.rate_limit_waits.with_label_values(&[api]).inc();
    }

    /// Waits so far, all APIs (for the `snapshot` command's summary).
    pub fn rate_limit_waits(&self) -> u64 {
        api::ALL
            .iter()
            .map(|a| self.rate_limit_waits.with_label_values(&[a]).get())
            .sum()
    }
}
