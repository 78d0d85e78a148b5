//! The series every event touches, resolved once. A `with_label_values`
//! call hashes its labels and takes the vector's lock on every event; the
//! profile (docs/benchmarks.md) showed those lookups, and a clone of the
//! whole [`super::Metrics`] per delivery, on the request path. Here each
//! series is an array index away.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::{outcome, Ingress};
use crate::destination::Destination;

/// The `outcome` values resolved here (every one but `challenge` and
/// `rejected_*`, which are rare and go through the vector).
const OUTCOMES: [&str; 5] = [
    outcome::PUBLISHED,
    outcome::DUPLICATE,
    outcome::IGNORED,
    outcome::DEAD_LETTERED,
    outcome::PUBLISH_FAILED,
];

pub(super) struct Hot {
    /// Indexed by [`Ingress`], then by position in [`OUTCOMES`].
    requests: [[IntCounter; OUTCOMES.len()]; 2],
    /// Indexed by [`Ingress`].
    request_duration: [Histogram; 2],
    /// Indexed by [`Destination`].
    publish_duration: [Histogram; 4],
}

fn ingress_index(ingress: Ingress) -> usize {
    match ingress {
        Ingress::Webhook => 0,
        Ingress::LongConnection => 1,
    }
}

fn destination_index(destination: Destination) -> usize {
    match destination {
        Destination::Record => 0,
        Destination::DeadLetter => 1,
        Destination::Raw => 2,
        Destination::Internal => 3,
    }
}

impl Hot {
    /// Resolves (and so creates, at 0) the series.
    pub(super) fn new(
        requests: &IntCounterVec,
        request_duration: &HistogramVec,
        publish_duration: &HistogramVec,
    ) -> Self {
        let by_ingress =
            |ingress: Ingress| OUTCOMES.map(|o| requests.with_label_values(&[ingress.as_str(), o]));
        Hot {
            requests: Ingress::ALL.map(by_ingress),
            request_duration: Ingress::ALL
                .map(|i| request_duration.with_label_values(&[i.as_str()])),
            publish_duration: Destination::ALL
                .map(|d| publish_duration.with_label_values(&[d.label()])),
        }
    }

    /// The counter of `requests_total{ingress, outcome}`, when resolved here.
    pub(super) fn requests(&self, ingress: Ingress, outcome: &str) -> Option<&IntCounter> {
        let at = OUTCOMES.iter().position(|o| *o == outcome)?;
        Some(&self.requests[ingress_index(ingress)][at])
    }

    pub(super) fn request_duration(&self, ingress: Ingress) -> &Histogram {
        &self.request_duration[ingress_index(ingress)]
    }

    pub(super) fn publish_duration(&self, destination: Destination) -> &Histogram {
        &self.publish_duration[destination_index(destination)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, Opts};

    /// Each resolved handle is the series its labels name: the arrays are
    /// built from the `ALL` lists, looked up through the index functions.
    #[test]
    fn every_handle_is_the_series_its_labels_name() {
        let requests = IntCounterVec::new(Opts::new("r", "r"), &["ingress", "outcome"]).unwrap();
        let request_duration =
            HistogramVec::new(HistogramOpts::new("d", "d"), &["ingress"]).unwrap();
        let publish_duration =
            HistogramVec::new(HistogramOpts::new("p", "p"), &["destination"]).unwrap();
        let hot = Hot::new(&requests, &request_duration, &publish_duration);
        for ingress in Ingress::ALL {
            for (n, o) in OUTCOMES.iter().enumerate() {
                for _ in 0..=n {
                    hot.requests(ingress, o).unwrap().inc();
                }
                let series = requests.with_label_values(&[ingress.as_str(), o]);
                assert_eq!(series.get(), n as u64 + 1, "{ingress:?} {o}");
            }
            hot.request_duration(ingress).observe(1.0);
            let series = request_duration.with_label_values(&[ingress.as_str()]);
            assert_eq!(series.get_sample_count(), 1, "{ingress:?}");
        }
        for d in Destination::ALL {
            hot.publish_duration(d).observe(1.0);
            let series = publish_duration.with_label_values(&[d.label()]);
            assert_eq!(series.get_sample_count(), 1, "{d:?}");
        }
        assert!(hot.requests(Ingress::Webhook, "rejected_token").is_none());
    }
}
