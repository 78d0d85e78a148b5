//! One event that arrived on the long connection, from its payload to its
//! ack: through the pipeline in its chat's turn, then the frame echoed back
//! with the outcome's code.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::frame::Frame;
use super::VIA;
use crate::metrics::Metrics;
use crate::order::Turn;
use crate::pipeline::{self, Answer, Pipeline};
use crate::protocol;

/// One whole event, from payload to ack.
pub(super) struct EventJob {
    pub(super) frame: Frame,
    /// The event, or why not: `None` when it was over the size limit.
    pub(super) parsed: Result<protocol::VerifiedEvent, Option<protocol::Rejection>>,
    pub(super) turn: Turn,
    pub(super) received: Instant,
    pub(super) deadline: Instant,
    pub(super) body_limit: usize,
    pub(super) pipeline: Pipeline,
    pub(super) metrics: Metrics,
    pub(super) ack_tx: mpsc::Sender<Vec<u8>>,
}

impl EventJob {
    pub(super) async fn run(self) {
        let code = match self.parsed {
            Err(None) => {
                self.metrics.count_rejected(VIA, "body_too_large");
                warn!(
                    ingress = VIA.as_str(),
                    reason = "body_too_large",
                    limit = self.body_limit,
                    "rejected an event frame"
                );
                500
            }
            Err(Some(rejection)) => {
                // Answered 500 as the SDKs answer a handler error.
                self.metrics.count_rejected(VIA, rejection.label());
                warn!(ingress = VIA.as_str(), reason = rejection.label(), detail = %rejection.detail(), "rejected an event frame");
                500
            }
            Ok(event) => {
                let event_id = event.event_id().unwrap_or_default().to_owned();
                let event_type = event.event_type().to_owned();
                let answer = self
                    .pipeline
                    .handle_in_turn(event, self.deadline, self.turn)
                    .await;
                pipeline::report(&self.metrics, VIA, &event_id, &event_type, &answer);
                match answer {
                    Answer::Unavailable(_) => 500,
                    _ => 200,
                }
            }
        };
        let took = self.received.elapsed();
        self.metrics.observe_request(VIA, took.as_secs_f64());
        self.metrics
            .long_connection
            .ack_duration
            .observe(took.as_secs_f64());
        let ack = self.frame.ack(code, took.as_millis() as u64);
        // Fails only when the connection is gone; Feishu then pushes again.
        let _ = self.ack_tx.send(ack.to_bytes()).await;
    }
}
