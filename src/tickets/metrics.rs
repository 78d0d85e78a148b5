//! The series of store apps' tickets: which app waits for one, how many
//! arrived and from where, and the requests for a new one.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::Metrics;

/// Values of `app_tickets_total`'s `source` label.
pub mod source {
    /// Pushed by Feishu to this replica's callback.
    pub const CALLBACK: &str = "callback";
    /// Read from the internal topic (another replica's, or this one's before
    /// a restart).
    pub const INTERNAL_TOPIC: &str = "internal_topic";
}

#[derive(Clone)]
pub struct TicketMetrics {
    waiting: IntGaugeVec,
    received: IntCounterVec,
    resends: IntCounterVec,
}

impl TicketMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let m = TicketMetrics {
            waiting: IntGaugeVec::new(
                Opts::new(
                    "app_ticket_waiting",
                    "1 while a store app has no app_ticket, so its OpenAPI calls (snapshots) wait; events keep publishing",
                ),
                &["app"],
            )
            .expect("metric"),
            received: IntCounterVec::new(
                Opts::new(
                    "app_tickets_total",
                    "Store apps' app_tickets taken in, by app and source (callback, internal_topic)",
                ),
                &["app", "source"],
            )
            .expect("metric"),
            resends: IntCounterVec::new(
                Opts::new(
                    "app_ticket_resends_total",
                    "Requests that Feishu push a store app's app_ticket again, by app and outcome (ok, failed)",
                ),
                &["app", "outcome"],
            )
            .expect("metric"),
        };
        metrics.register(Box::new(m.waiting.clone()));
        metrics.register(Box::new(m.received.clone()));
        metrics.register(Box::new(m.resends.clone()));
        m
    }

    pub fn waiting(&self, app: &str, waiting: bool) {
        self.waiting
            .with_label_values(&[app])
            .set(i64::from(waiting));
    }

    pub fn received(&self, app: &str, source: &str) {
        self.received.with_label_values(&[app, source]).inc();
    }

    pub fn resent(&self, app: &str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.resends.with_label_values(&[app, outcome]).inc();
    }
}
