//! Store apps' `app_ticket`s, shared by every replica.
//!
//! Feishu pushes a store app's ticket to its callback URL about every hour,
//! to whichever replica its load balancer picks; every replica needs it to
//! make the app's OpenAPI tokens. The replica that receives it writes it to
//! the bridge's internal topic (`BRIDGE_INTERNAL_TOPIC`) and answers Feishu
//! only once Kafka has acknowledged it; every replica reads that topic from
//! its beginning and keeps the newest ticket per app ([`reader`]). The
//! topic, not the member or raw topics: a ticket is a credential, and
//! consumers that may read the record streams must not read it (the ACL
//! table in docs/kafka.md gives this topic to the bridge alone); its records
//! are keyed per app, so a compacted topic keeps just the newest.

mod metrics;
mod reader;
pub mod record;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

pub use metrics::TicketMetrics;
pub use reader::TicketReader;

use crate::config::apps::AppKind;
use crate::config::Config;
use crate::destination::Destination;
use crate::metrics::Metrics;
use crate::protocol::VerifiedEvent;
use crate::publish_error::PublishError;
use crate::secret::Secret;
use crate::sink::{Outgoing, Sink};

/// The book of the listed store apps that have an `app_secret` (their
/// OpenAPI needs the ticket); `None` when there are none.
pub fn book(config: &Config, metrics: &Metrics) -> Option<Tickets> {
    config.internal_topic.as_ref()?;
    let apps = config
        .apps
        .0
        .iter()
        .filter(|a| a.kind == AppKind::Store && a.app_secret.is_some())
        .map(|a| (a.app_id.clone(), a.name.clone()));
    Some(Tickets::new(apps, TicketMetrics::new(metrics)))
}

/// Starts reading the internal topic into `book`, until `stop`.
pub fn read(
    config: &Config,
    book: &Tickets,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let topic = config
        .internal_topic
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("store apps' tickets need BRIDGE_INTERNAL_TOPIC"))?;
    let reader = TicketReader::new(config, topic, book.clone())
        .map_err(|e| anyhow::anyhow!("cannot create the internal topic's consumer: {e}"))?;
    info!(topic, apps = ?book.waiting(), "store apps: reading their app_tickets from the internal topic");
    Ok(reader.spawn(stop)?)
}

/// The app and ticket an `app_ticket` event carries (a schema 1.0 event:
/// `{"event": {"app_id", "app_ticket", "type": "app_ticket"}}`). Read
/// apart from the typed envelope, which has no place for them: it comes
/// once an hour, not once per event.
pub fn from_event(event: &VerifiedEvent) -> Option<(String, Secret)> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        event: Body,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        app_id: String,
        app_ticket: String,
    }
    let envelope: Envelope = serde_json::from_str(event.text()).ok()?;
    let Body { app_id, app_ticket } = envelope.event;
    (!app_id.is_empty() && !app_ticket.is_empty()).then(|| (app_id, Secret::new(app_ticket)))
}

/// Where each store app's newest ticket is kept in this process.
#[derive(Clone)]
pub struct Tickets {
    inner: Arc<Inner>,
}

struct Inner {
    /// The store apps with an app_secret, by App ID, with their names.
    apps: HashMap<String, String>,
    tickets: Mutex<HashMap<String, Secret>>,
    /// Per app, the tenants it is known to be installed in (events came
    /// from them): read from the internal topic, or being written to it.
    tenants: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Bumped at every new ticket: waiters look again.
    changed: watch::Sender<u64>,
    /// The internal topic has been read up to where it ended at start-up.
    loaded: AtomicBool,
    metrics: TicketMetrics,
}

impl Tickets {
    /// A book for `apps` (App ID, name), each waiting for its ticket.
    pub fn new(apps: impl IntoIterator<Item = (String, String)>, metrics: TicketMetrics) -> Self {
        let apps: HashMap<String, String> = apps.into_iter().collect();
        for app in apps.keys() {
            metrics.waiting(app, true);
        }
        Tickets {
            inner: Arc::new(Inner {
                apps,
                tickets: Mutex::new(HashMap::new()),
                tenants: Mutex::new(HashMap::new()),
                changed: watch::channel(0).0,
                loaded: AtomicBool::new(false),
                metrics,
            }),
        }
    }

    pub fn metrics(&self) -> &TicketMetrics {
        &self.inner.metrics
    }

    /// Whether `app_id` is a store app whose ticket this book keeps.
    pub fn keeps(&self, app_id: &str) -> bool {
        self.inner.apps.contains_key(app_id)
    }

    /// The newest ticket of `app_id`, if one arrived.
    pub fn get(&self, app_id: &str) -> Option<Secret> {
        self.lock().get(app_id).cloned()
    }

    /// Keeps `ticket` as `app_id`'s newest (from a callback or the topic).
    pub fn learn(&self, app_id: &str, ticket: Secret, source: &'static str) {
        if !self.keeps(app_id) {
            return;
        }
        let fresh = self.lock().insert(app_id.to_owned(), ticket.clone()) != Some(ticket);
        self.inner.metrics.received(app_id, source);
        if fresh {
            self.inner.metrics.waiting(app_id, false);
            self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
            info!(app_id, source, "store app: app_ticket updated");
        }
    }

    /// Waits up to `timeout` for `app_id`'s ticket.
    pub async fn wait(&self, app_id: &str, timeout: Duration) -> Option<Secret> {
        let mut rx = self.inner.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(t) = self.get(app_id) {
                    return t;
                }
                if rx.changed().await.is_err() {
                    // The sender lives in `self`: cannot close while we wait.
                    std::future::pending::<()>().await;
                }
            }
        });
        waited.await.ok()
    }

    /// The store apps (by name) that have no ticket yet.
    pub fn waiting(&self) -> Vec<String> {
        let tickets = self.lock();
        let mut names: Vec<String> = self
            .inner
            .apps
            .iter()
            .filter(|(id, _)| !tickets.contains_key(*id))
            .map(|(_, name)| name.clone())
            .collect();
        names.sort();
        names
    }

    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    fn mark_loaded(&self) {
        self.inner.loaded.store(true, Ordering::Release);
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once the internal topic was read to where it ended at start.
    pub async fn wait_loaded(&self) {
        let mut rx = self.inner.changed.subscribe();
        while !self.is_loaded() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Writes `ticket` to the internal topic and waits for Kafka's ack;
    /// then keeps it. Feishu is answered 2xx only after this succeeds, so
    /// a ticket no replica can read back is pushed again.
    pub async fn share(
        &self,
        sink: &Sink,
        app_id: &str,
        ticket: Secret,
        received_at_ms: i64,
    ) -> Result<(), PublishError> {
        let msg = Outgoing {
            destination: Destination::Internal,
            key: Some(record::ticket_key(app_id)),
            payload: record::ticket_value(app_id, &ticket, received_at_ms),
            headers: vec![("schema", record::TICKET_SCHEMA.to_owned())],
        };
        sink.enqueue(&msg)?.acked().await?;
        self.learn(app_id, ticket, metrics::source::CALLBACK);
        Ok(())
    }

    /// Notes that `app_id` is installed in `tenant_key` (an event came from
    /// it): the first time, written to the internal topic in the
    /// background, so that the snapshot command and every replica know the
    /// tenants to list. A write that fails is tried again at the tenant's
    /// next event.
    pub fn note_tenant(&self, sink: &Sink, app_id: &str, tenant_key: &str) {
        if !self.keeps(app_id) || tenant_key.is_empty() {
            return;
        }
        {
            let mut tenants = self.tenants();
            let known = tenants.entry(app_id.to_owned()).or_default();
            if !known.insert(tenant_key.to_owned()) {
                return;
            }
        }
        let msg = Outgoing {
            destination: Destination::Internal,
            key: Some(record::tenant_key(app_id, tenant_key)),
            payload: record::tenant_value(app_id, tenant_key, crate::clock::now_ms()),
            headers: vec![("schema", record::TENANT_SCHEMA.to_owned())],
        };
        let (book, app_id, tenant_key) = (self.clone(), app_id.to_owned(), tenant_key.to_owned());
        let delivery = sink.enqueue(&msg);
        tokio::spawn(async move {
            let written = match delivery {
                Ok(d) => d.acked().await,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    info!(
                        app_id,
                        tenant_key, "store app: a new tenant, kept on the internal topic"
                    );
                }
                Err(e) => {
                    if let Some(known) = book.tenants().get_mut(&app_id) {
                        known.remove(&tenant_key);
                    }
                    tracing::warn!(app_id, tenant_key, error = %e, "store app: writing a new tenant to the internal topic failed; tried again at its next event");
                }
            }
        });
    }

    /// A tenant read back from the internal topic.
    fn known_tenant(&self, app_id: &str, tenant_key: &str) {
        if self.keeps(app_id) {
            self.tenants()
                .entry(app_id.to_owned())
                .or_default()
                .insert(tenant_key.to_owned());
        }
    }

    /// The tenants `app_id` is known to be installed in, sorted.
    pub fn tenants_of(&self, app_id: &str) -> Vec<String> {
        self.tenants()
            .get(app_id)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn tenants(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.inner.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Secret>> {
        self.inner.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ticket_wakes_its_waiters_and_only_listed_apps_are_kept() {
        let registry = crate::metrics::Metrics::new();
        let metrics = TicketMetrics::new(&registry);
        let book = Tickets::new([("cli_s".to_owned(), "shop".to_owned())], metrics);
        assert_eq!(book.waiting(), ["shop"]);
        assert!(book
            .wait("cli_s", Duration::from_millis(20))
            .await
            .is_none());
        let waiter = {
            let book = book.clone();
            tokio::spawn(async move { book.wait("cli_s", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        book.learn("cli_other", Secret::new("x"), metrics::source::CALLBACK);
        book.learn("cli_s", Secret::new("t-1"), metrics::source::INTERNAL_TOPIC);
        assert_eq!(waiter.await.unwrap().unwrap().expose(), "t-1");
        assert!(book.get("cli_other").is_none());
        assert!(book.waiting().is_empty());
        let m = registry.render();
        assert!(m.contains("app_ticket_waiting{app=\"cli_s\"} 0"), "{m}");
    }
}
