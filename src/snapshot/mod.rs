//! Membership snapshots: a chat's members listed from Feishu's OpenAPI and
//! published on the member topic, keyed by the chat, with the producer's
//! usual guarantees (docs/records.md, "Snapshots").
//!
//! The whole listing happens before anything is published: a listing that
//! fails half-way publishes nothing. Parts are then handed to the producer
//! in order and each must be acknowledged; a publish that fails leaves
//! parts without the last one, which a consumer never applies.

pub mod command;
mod metrics;
mod per_app;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

pub use metrics::SnapshotMetrics;
pub use per_app::{NotSnapshotted, Snapshotters};

use crate::cloudevents;
use crate::destination::Destination;
use crate::openapi::im::{Chat, Member};
use crate::openapi::{ApiError, OpenApi};
use crate::publish_error::PublishError;
use crate::record::snapshot::{self, Origin, SnapshotPart, Trigger, SNAPSHOT_SCHEMA};
use crate::record::User;
use crate::sink::{Outgoing, Sink};

/// Attempts of one chat's listing when it fails in a retriable way (each
/// call inside is retried by the client too).
const LIST_ATTEMPTS: u32 = 3;

/// Why a chat's snapshot was not published (whole).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("listing failed: {0}")]
    List(#[from] ApiError),
    #[error("publishing part {part} of {parts} failed: {error}")]
    Publish {
        part: usize,
        parts: usize,
        error: PublishError,
    },
}

/// A snapshot published whole.
#[derive(Debug, Clone)]
pub struct Published {
    pub snapshot_id: String,
    pub members: usize,
    pub parts: usize,
}

/// What a run over several chats did.
#[derive(Debug, Default)]
pub struct Summary {
    pub chats: usize,
    pub members: usize,
    pub records: usize,
    /// Chats whose snapshot failed, with why.
    pub failures: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct Snapshotter {
    api: Arc<OpenApi>,
    sink: Sink,
    metrics: SnapshotMetrics,
    /// The app whose OpenAPI lists: the records' `app_id` and `ce_source`.
    app_id: Option<String>,
}

impl Snapshotter {
    pub fn new(api: Arc<OpenApi>, sink: Sink, metrics: SnapshotMetrics, app_id: String) -> Self {
        Snapshotter {
            api,
            sink,
            metrics,
            app_id: Some(app_id),
        }
    }

    pub fn api(&self) -> &OpenApi {
        &self.api
    }

    /// Lists `chat_id`'s members and publishes its snapshot. `tenant_key`
    /// is the tenant the chat belongs to, when the caller knows it (the
    /// bot-added event's); else the chat listing's, if `chat` came from it.
    pub async fn chat(
        &self,
        chat_id: &str,
        chat: Option<&Chat>,
        tenant_key: Option<&str>,
        trigger: Trigger,
    ) -> Result<Published, SnapshotError> {
        let started = Instant::now();
        let origin = Origin {
            app_id: self.app_id.as_deref(),
            tenant_key: tenant_key.or(chat.and_then(|c| c.tenant_key.as_deref())),
        };
        let result = self.list_and_publish(chat_id, chat, origin, trigger).await;
        self.metrics
            .done(trigger, result.is_ok(), started.elapsed());
        match &result {
            Ok(p) => info!(
                chat_id,
                trigger = trigger.as_str(),
                snapshot_id = %p.snapshot_id,
                members = p.members,
                parts = p.parts,
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot published"
            ),
            Err(e) => warn!(chat_id, trigger = trigger.as_str(), error = %e, "snapshot failed"),
        }
        result
    }

    /// Every chat the bot is in (`only` empty), or the chats of `only`.
    pub async fn run(&self, only: &[String], trigger: Trigger) -> Result<Summary, ApiError> {
        self.run_in(None, only, trigger).await
    }

    /// [`Snapshotter::run`] in `tenant` (a store app's installation).
    pub async fn run_in(
        &self,
        tenant: Option<&str>,
        only: &[String],
        trigger: Trigger,
    ) -> Result<Summary, ApiError> {
        let chats: Vec<(String, Option<Chat>)> = if only.is_empty() {
            self.api
                .list_chats(tenant)
                .await?
                .into_iter()
                .map(|c| (c.chat_id.clone(), Some(c)))
                .collect()
        } else {
            only.iter().map(|id| (id.clone(), None)).collect()
        };
        let mut summary = Summary::default();
        for (chat_id, chat) in &chats {
            summary.chats += 1;
            match self.chat(chat_id, chat.as_ref(), tenant, trigger).await {
                Ok(p) => {
                    summary.members += p.members;
                    summary.records += p.parts;
                }
                Err(e) => summary.failures.push((chat_id.clone(), e.to_string())),
            }
        }
        Ok(summary)
    }

    async fn list_and_publish(
        &self,
        chat_id: &str,
        chat: Option<&Chat>,
        origin: Origin<'_>,
        trigger: Trigger,
    ) -> Result<Published, SnapshotError> {
        // Taken before the first page is asked for: every member the listing
        // returns was there at this instant or joined later.
        let as_of_ms = crate::clock::now_ms();
        let mut attempt = 1;
        let members = loop {
            match self.api.list_members(origin.tenant_key, chat_id).await {
                Ok(m) => break m,
                Err(e @ ApiError::Retriable { .. }) if attempt < LIST_ATTEMPTS => {
                    warn!(chat_id, error = %e, attempt, "snapshot listing failed; retrying");
                    self.metrics.retried(trigger);
                    tokio::time::sleep(Duration::from_secs(1) * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let users: Vec<User> = members.members.iter().map(user).collect();
        let snapshot_id = format!("{:032x}", rand::random::<u128>());
        let parts = snapshot::parts(
            &snapshot_id,
            chat_id,
            origin,
            chat,
            as_of_ms,
            trigger,
            &users,
        );
        let count = parts.len();
        // Handed over in order on one key: the idempotent producer keeps
        // that order on the partition; each ack is then awaited.
        let mut deliveries = Vec::with_capacity(count);
        for part in &parts {
            let delivery =
                self.sink
                    .enqueue(&self.message(part))
                    .map_err(|error| SnapshotError::Publish {
                        part: part.part,
                        parts: count,
                        error,
                    })?;
            deliveries.push((part.part, delivery));
        }
        for (part, delivery) in deliveries {
            delivery
                .acked()
                .await
                .map_err(|error| SnapshotError::Publish {
                    part,
                    parts: count,
                    error,
                })?;
        }
        Ok(Published {
            snapshot_id,
            members: users.len(),
            parts: count,
        })
    }

    fn message(&self, part: &SnapshotPart<'_, Chat>) -> Outgoing {
        let ce_id = format!("{}-{}", part.snapshot_id, part.part);
        let mut headers = vec![
            ("schema", SNAPSHOT_SCHEMA.to_owned()),
            ("snapshot_id", part.snapshot_id.to_owned()),
            ("part", part.part.to_string()),
            ("last", part.last.to_string()),
            ("app_id", part.origin.app_id.unwrap_or_default().to_owned()),
            (
                "tenant_key",
                part.origin.tenant_key.unwrap_or_default().to_owned(),
            ),
        ];
        headers.extend(
            cloudevents::Attributes {
                id: &ce_id,
                kind: SNAPSHOT_SCHEMA,
                app_id: self.app_id.as_deref(),
                time_ms: Some(part.as_of_ms),
            }
            .headers(),
        );
        Outgoing {
            destination: Destination::Record,
            key: Some(part.chat_id.to_owned()),
            // Plain structs of strings, numbers and booleans: cannot fail.
            payload: serde_json::to_vec(part).unwrap_or_default(),
            headers,
        }
    }
}

/// A listed member in the member records' user shape (`open_id` only: the
/// listing asks for open_ids).
fn user(m: &Member) -> User {
    User {
        name: m.name.clone(),
        tenant_key: m.tenant_key.clone(),
        open_id: Some(m.member_id.clone()),
        union_id: None,
        user_id: None,
    }
}
