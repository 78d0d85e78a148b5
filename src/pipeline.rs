//! What happens to a verified event: ignore it, or deduplicate, normalize
//! and publish it, and decide the answer. Independent of the transport, so
//! that every ingress gets the same semantics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{info, warn};

pub use crate::clock::now_ms;
use crate::dedup::{self, Claim, Dedup, EventKey, Settled};
use crate::message;
use crate::metrics::{outcome, Ingress, Metrics};
use crate::order::Turn;
use crate::protocol::VerifiedEvent;
use crate::publish_error::PublishError;
use crate::record::{MemberKind, Trigger};
use crate::routing::{NotRouted, Route, Routing};
use crate::sink::{Outgoing, Sink};
use crate::snapshot::Snapshotters;
use crate::tickets::Tickets;

/// The answer owed to Feishu for one event.
#[derive(Debug)]
pub enum Answer {
    Published,
    DeadLettered {
        reason: String,
    },
    Duplicate,
    /// Authentic, acknowledged, and not published.
    Ignored(NotRouted),
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
    #[error("kafka cannot commit records, or the deduplication memory is still reading what it committed on its return")]
    CatchingUp,
    #[error(
        "an earlier event of the same chat was not handed to Kafka within the publish deadline"
    )]
    EarlierEventOfChatPending,
}

#[derive(Clone)]
pub struct Pipeline {
    dedup: Dedup,
    sink: Sink,
    routing: Arc<Routing>,
    /// Snapshots a chat once the bot's arrival in it is published, as the
    /// app the event was sent to.
    on_bot_added: Option<Snapshotters>,
    /// Store apps' tickets, kept and shared rather than dropped.
    tickets: Option<Tickets>,
}

impl Pipeline {
    pub fn new(dedup: Dedup, sink: Sink, routing: Routing) -> Self {
        Pipeline {
            dedup,
            sink,
            routing: Arc::new(routing),
            on_bot_added: None,
            tickets: None,
        }
    }

    /// Keeps the store apps' `app_ticket`s in `tickets` (shared through the
    /// internal topic) instead of only acknowledging them.
    pub fn with_tickets(mut self, tickets: Tickets) -> Self {
        self.tickets = Some(tickets);
        self
    }

    /// Lists a chat's members and publishes its snapshot after its
    /// `bot.added` record is acknowledged (in the background: Feishu's
    /// answer does not wait for the listing).
    pub fn with_snapshots_on_bot_added(mut self, snapshotters: Snapshotters) -> Self {
        self.on_bot_added = Some(snapshotters);
        self
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
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
        if let (Some(tickets), Some(app_id), Some(tenant_key)) =
            (&self.tickets, event.app_id(), event.tenant_key())
        {
            // Where a store app is installed: every authentic event says.
            tickets.note_tenant(&self.sink, app_id, tenant_key);
        }
        let route = match self.routing.route(&event) {
            Ok(route) => route,
            Err(NotRouted::AppTicket) => return self.take_ticket(&event, deadline).await,
            Err(why) => return Answer::Ignored(why),
        };
        if !turn.wait(deadline).await {
            return Answer::Unavailable(Unavailable::EarlierEventOfChatPending);
        }
        let received_at_ms = now_ms();
        let build = || {
            let (msg, built) = message::build(&event, route, received_at_ms);
            let on_ack = match built {
                Ok(()) => Answer::Published,
                Err(reason) => Answer::DeadLettered {
                    reason: reason.to_string(),
                },
            };
            (msg, on_ack)
        };
        let Some(event_id) = event.event_id().map(str::to_owned) else {
            // Nothing to deduplicate on: this can only be a dead letter.
            let (msg, answer) = build();
            return self.publish(msg, answer, None, deadline, &mut turn).await;
        };
        let key = EventKey {
            app_id: event.app_id().unwrap_or_default(),
            event_id: &event_id,
        };
        match self.dedup.claim(key) {
            Claim::Published => Answer::Duplicate,
            Claim::Incomplete => Answer::Unavailable(Unavailable::WarmingUp),
            Claim::Behind => Answer::Unavailable(Unavailable::CatchingUp),
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
                let (msg, answer) = build();
                let answer = self
                    .publish(msg, answer, Some(owner), deadline, &mut turn)
                    .await;
                if matches!(answer, Answer::Published)
                    && route == Route::Member(MemberKind::BotAdded)
                {
                    self.snapshot_after_bot_added(&event);
                }
                answer
            }
        }
    }

    /// A store app's ticket: written to the internal topic (acknowledged
    /// before Feishu is answered) and kept; never published to the record
    /// topics. Any other app's, or without store apps: acknowledged only.
    async fn take_ticket(&self, event: &VerifiedEvent, deadline: Instant) -> Answer {
        let ignored = Answer::Ignored(NotRouted::AppTicket);
        let Some(tickets) = &self.tickets else {
            return ignored;
        };
        let Some((app_id, ticket)) = crate::tickets::from_event(event) else {
            return ignored;
        };
        if !tickets.keeps(&app_id) {
            return ignored;
        }
        let shared = tickets.share(&self.sink, &app_id, ticket, now_ms());
        match tokio::time::timeout_at(deadline, shared).await {
            Ok(Ok(())) => ignored,
            Ok(Err(e)) => Answer::Unavailable(Unavailable::Kafka(e)),
            Err(_) => Answer::Unavailable(Unavailable::Deadline),
        }
    }

    fn snapshot_after_bot_added(&self, event: &VerifiedEvent) {
        let (Some(snapshotter), Some(chat_id)) = (
            self.on_bot_added
                .as_ref()
                .and_then(|s| s.of_app(event.app_id()))
                .cloned(),
            event.chat_id().map(str::to_owned),
        ) else {
            return;
        };
        let tenant_key = event.tenant_key().map(str::to_owned);
        // The record is acknowledged: the snapshot's parts come after it on
        // the chat's partition. Its outcome is logged and counted there.
        tokio::spawn(async move {
            let _ = snapshotter
                .chat(&chat_id, None, tenant_key.as_deref(), Trigger::BotAdded)
                .await;
        });
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
    let outcome = match answer {
        Answer::Published => {
            info!(ingress = via, outcome = outcome::PUBLISHED, %event_id, %event_type, "published");
            outcome::PUBLISHED
        }
        Answer::Duplicate => {
            info!(ingress = via, outcome = outcome::DUPLICATE, %event_id, %event_type, "duplicate of a remembered event_id; not published again");
            outcome::DUPLICATE
        }
        Answer::DeadLettered { reason } => {
            warn!(ingress = via, outcome = outcome::DEAD_LETTERED, %event_id, %event_type, %reason, "event could not be normalized; written to the dead-letter topic");
            outcome::DEAD_LETTERED
        }
        Answer::Ignored(why) => {
            metrics.count_ignored(ingress, event_type);
            match why {
                NotRouted::Unlisted => {
                    info!(ingress = via, outcome = outcome::IGNORED, %event_id, %event_type, "event type not routed (BRIDGE_EVENT_TYPES, BRIDGE_RAW_EVENT_TYPES); acknowledged")
                }
                NotRouted::AppTicket => {
                    info!(ingress = via, outcome = outcome::IGNORED, %event_id, %event_type, "app_ticket (a store app's credential): never published to the record topics; a listed store app's is kept on the internal topic; acknowledged")
                }
                NotRouted::Schema1 => {
                    info!(ingress = via, outcome = outcome::IGNORED, %event_id, %event_type, "schema 1.0 event: never routed (only 2.0 envelopes are published); acknowledged")
                }
            }
            return;
        }
        Answer::Unavailable(why) => {
            warn!(ingress = via, outcome = outcome::PUBLISH_FAILED, %event_id, %event_type, reason = %why, "not acknowledged by kafka; answering so that Feishu delivers it again");
            outcome::PUBLISH_FAILED
        }
    };
    metrics.count(ingress, outcome);
    metrics.count_event(ingress, event_type, outcome);
}
