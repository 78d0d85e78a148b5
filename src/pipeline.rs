//! What happens to a verified event: ignore it, or deduplicate, normalize
//! and publish it, and decide the answer. Independent of the transport, so
//! that every ingress gets the same semantics.

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::cloudevents;
use crate::dedup::{self, Claim, Dedup, Settled};
use tracing::{info, warn};

use crate::metrics::{outcome, Ingress, Metrics};
use crate::order::Turn;
use crate::protocol::{Schema, VerifiedEvent, WITHDRAWN_EVENT_TYPE};
use crate::record::{self, DeadLetter, DEAD_LETTER_SCHEMA, RECORD_SCHEMA};
use crate::sink::{Destination, Outgoing, PublishError, Sink};

/// The answer owed to Feishu for one event.
#[derive(Debug)]
pub enum Answer {
    Published,
    DeadLettered {
        reason: String,
    },
    Duplicate,
    Ignored,
    /// Not written (yet): Feishu must retry.
    Unavailable(Unavailable),
}

#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("{0}")]
    Kafka(#[from] PublishError),
    #[error("kafka did not acknowledge within the publish deadline; delivery continues")]
    Deadline,
    #[error("an earlier copy of this event is still being published")]
    EarlierCopyPending,
    #[error("an earlier copy of this event failed to publish")]
    EarlierCopyFailed,
    #[error("the deduplication memory is still being read back from Kafka (warm start)")]
    WarmingUp,
    #[error(
        "an earlier event of the same chat was not handed to Kafka within the publish deadline"
    )]
    EarlierEventOfChatPending,
}

#[derive(Clone)]
pub struct Pipeline {
    dedup: Dedup,
    sink: Sink,
}

impl Pipeline {
    pub fn new(dedup: Dedup, sink: Sink) -> Self {
        Pipeline { dedup, sink }
    }

    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// Handles one verified event, answering by `deadline` at the latest.
    pub async fn handle(&self, event: VerifiedEvent, deadline: Instant) -> Answer {
        self.handle_in_turn(event, deadline, Turn::none()).await
    }

    /// [`Pipeline::handle`] for an event that holds a place in its chat's
    /// line: its record reaches the producer only after the previous one's,
    /// and the next may go as soon as this one's was handed over (or will
    /// not be).
    pub async fn handle_in_turn(
        &self,
        event: VerifiedEvent,
        deadline: Instant,
        mut turn: Turn,
    ) -> Answer {
        if event.schema() != Schema::V2 || event.event_type() != WITHDRAWN_EVENT_TYPE {
            return Answer::Ignored;
        }
        if !turn.wait(deadline).await {
            return Answer::Unavailable(Unavailable::EarlierEventOfChatPending);
        }
        let received_at_ms = now_ms();
        let Some(event_id) = event.event_id().map(str::to_owned) else {
            // Nothing to deduplicate on: this can only be a dead letter.
            let (msg, answer) = build(&event, received_at_ms);
            return self.publish(msg, answer, None, deadline, &mut turn).await;
        };
        match self.dedup.claim(&event_id) {
            Claim::Published => Answer::Duplicate,
            Claim::Incomplete => Answer::Unavailable(Unavailable::WarmingUp),
            Claim::InFlight(rx) => {
                // Not published by this copy: the chat's next event may go.
                turn.release();
                match dedup::wait(rx, deadline.saturating_duration_since(Instant::now())).await {
                    Some(Settled::Published) => Answer::Duplicate,
                    Some(Settled::Failed) => Answer::Unavailable(Unavailable::EarlierCopyFailed),
                    None => Answer::Unavailable(Unavailable::EarlierCopyPending),
                }
            }
            Claim::Owner(owner) => {
                let (msg, answer) = build(&event, received_at_ms);
                self.publish(msg, answer, Some(owner), deadline, &mut turn)
                    .await
            }
        }
    }

    async fn publish(
        &self,
        msg: Outgoing,
        on_ack: Answer,
        owner: Option<dedup::Owner>,
        deadline: Instant,
        turn: &mut Turn,
    ) -> Answer {
        let enqueued = self.sink.enqueue(&msg);
        // The ordering point: the chat's next record may follow this one.
        turn.release();
        let delivery = match enqueued {
            Ok(d) => d,
            Err(e) => {
                if let Some(owner) = owner {
                    owner.settle(Settled::Failed);
                }
                return Answer::Unavailable(e.into());
            }
        };
        // Awaited in the request itself (no task, no channel: the ack wakes
        // the request directly). If the request stops waiting, at the
        // deadline or because the client went away, `Settling` hands the
        // rest to a task, so a late ack still settles the dedup entry and
        // the next retry is a duplicate.
        let mut settling = Settling {
            ack: Some(Box::pin(delivery.acked())),
            owner,
        };
        match settling.wait(deadline).await {
            Some(Ok(())) => on_ack,
            Some(Err(e)) => Answer::Unavailable(e.into()),
            None => Answer::Unavailable(Unavailable::Deadline),
        }
    }
}

type Ack = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

/// A delivery whose outcome must settle its dedup entry, whoever waits for it.
struct Settling {
    /// `None` once the ack arrived.
    ack: Option<Ack>,
    owner: Option<dedup::Owner>,
}

impl Settling {
    /// The delivery's outcome, or `None` if `deadline` came first.
    async fn wait(&mut self, deadline: Instant) -> Option<Result<(), PublishError>> {
        let ack = self.ack.as_mut()?;
        let result = tokio::time::timeout_at(deadline, ack).await.ok()?;
        self.ack = None;
        settle(self.owner.take(), &result);
        Some(result)
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        let Some(ack) = self.ack.take() else {
            return;
        };
        let owner = self.owner.take();
        // Outside a runtime (it is shutting down) the owner is dropped
        // unsettled, which releases the id as failed: the retry publishes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let result = ack.await;
                settle(owner, &result);
            });
        }
    }
}

fn settle(owner: Option<dedup::Owner>, result: &Result<(), PublishError>) {
    if let Some(owner) = owner {
        owner.settle(if result.is_ok() {
            Settled::Published
        } else {
            Settled::Failed
        });
    }
}

/// Counts and logs an answer, the same way for every ingress; the ingress
/// then turns it into its own reply (an HTTP status, an ack frame).
pub fn report(
    metrics: &Metrics,
    ingress: Ingress,
    event_id: &str,
    event_type: &str,
    answer: &Answer,
) {
    let via = ingress.as_str();
    match answer {
        Answer::Published => {
            metrics.count(ingress, outcome::PUBLISHED);
            info!(ingress = via, outcome = outcome::PUBLISHED, %event_id, "published");
        }
        Answer::Duplicate => {
            metrics.count(ingress, outcome::DUPLICATE);
            info!(ingress = via, outcome = outcome::DUPLICATE, %event_id, "duplicate of a remembered event_id; not published again");
        }
        Answer::DeadLettered { reason } => {
            metrics.count(ingress, outcome::DEAD_LETTERED);
            warn!(ingress = via, outcome = outcome::DEAD_LETTERED, %event_id, %reason, "event could not be normalized; written to the dead-letter topic");
        }
        Answer::Ignored => {
            metrics.count_ignored(ingress, event_type);
            info!(ingress = via, outcome = outcome::IGNORED, %event_id, %event_type, "event type not handled; acknowledged");
        }
        Answer::Unavailable(why) => {
            metrics.count(ingress, outcome::PUBLISH_FAILED);
            warn!(ingress = via, outcome = outcome::PUBLISH_FAILED, %event_id, reason = %why, "not acknowledged by kafka; answering so that Feishu delivers it again");
        }
    }
}

/// Normalizes the event, or wraps it as a dead letter when it cannot be.
fn build(event: &VerifiedEvent, received_at_ms: i64) -> (Outgoing, Answer) {
    let event_id = event.event_id().unwrap_or_default().to_owned();
    match record::normalize(event, received_at_ms) {
        Ok(rec) => {
            let mut headers = vec![
                ("event_id", rec.event_id.clone()),
                ("event_type", rec.event_type.clone()),
                ("tenant_key", rec.tenant_key.clone().unwrap_or_default()),
                ("schema", RECORD_SCHEMA.to_owned()),
            ];
            headers.extend(
                cloudevents::Attributes {
                    id: &rec.event_id,
                    kind: &rec.event_type,
                    app_id: rec.app_id.as_deref(),
                    time_ms: rec.create_time_ms,
                }
                .headers(),
            );
            let msg = Outgoing {
                destination: Destination::Record,
                key: Some(rec.chat_id.clone()),
                payload: to_json(&rec),
                headers,
            };
            (msg, Answer::Published)
        }
        Err(reason) => {
            let dl = DeadLetter::new(event, &reason, received_at_ms);
            let header = event.envelope().get("header");
            let text = |field: &str| header.and_then(|h| h.get(field)).and_then(|t| t.as_str());
            let tenant_key = text("tenant_key").unwrap_or_default().to_owned();
            // Best effort: the event could not be normalized, so create_time
            // may be what is wrong with it.
            let create_time_ms = header.and_then(|h| h.get("create_time")).and_then(|t| {
                t.as_i64()
                    .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
            });
            let mut headers = vec![
                ("event_id", event_id.clone()),
                ("event_type", event.event_type().to_owned()),
                ("tenant_key", tenant_key),
                ("schema", DEAD_LETTER_SCHEMA.to_owned()),
                ("reason", reason.to_string()),
            ];
            // ce_id must not be empty; an event without event_id gets one
            // derived from its content, so the same envelope keeps its id.
            let ce_id = if event_id.is_empty() {
                cloudevents::content_id(&to_json(event.envelope()))
            } else {
                event_id.clone()
            };
            headers.extend(
                cloudevents::Attributes {
                    id: &ce_id,
                    kind: cloudevents::DEAD_LETTER_TYPE,
                    app_id: text("app_id"),
                    time_ms: create_time_ms,
                }
                .headers(),
            );
            let msg = Outgoing {
                destination: Destination::DeadLetter,
                key: dl.chat_id().map(str::to_owned),
                payload: to_json(&dl),
                headers,
            };
            (
                msg,
                Answer::DeadLettered {
                    reason: reason.to_string(),
                },
            )
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (string keys, no maps with non-string
    // keys, no floats) cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
