//! Which snapshotter lists a chat: each app sees its chats through its own
//! OpenAPI client (its own tokens; open_ids are per app). The single app's
//! settings (`FEISHU_APP_ID`, `FEISHU_APP_SECRET`) make one; each listed app
//! with an `app_secret` makes another, a store app's from its app_ticket.

use std::collections::HashMap;
use std::sync::Arc;

use super::{SnapshotMetrics, Snapshotter};
use crate::config::apps::AppKind;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::openapi::{OpenApi, OpenApiConfig, OpenApiMetrics, StoreApp};
use crate::sink::Sink;
use crate::tickets::Tickets;

#[derive(Clone, Default)]
pub struct Snapshotters {
    /// The single app's, used for events of any app not listed.
    single: Option<Snapshotter>,
    /// The listed apps', by App ID.
    listed: HashMap<String, Snapshotter>,
}

impl Snapshotters {
    /// One per app with OpenAPI credentials; a store app's needs `tickets`.
    pub fn new(
        config: &Config,
        sink: &Sink,
        metrics: &Metrics,
        tickets: Option<&Tickets>,
    ) -> anyhow::Result<Self> {
        let api_metrics = OpenApiMetrics::new(metrics);
        let snapshot_metrics = SnapshotMetrics::new(metrics);
        let make = |client: OpenApiConfig,
                    store: Option<StoreApp>|
         -> anyhow::Result<Snapshotter> {
            let app_id = client.app_id.clone();
            let api = match store {
                None => OpenApi::new(client, api_metrics.clone()),
                Some(store) => OpenApi::store(client, api_metrics.clone(), store),
            }
            .map_err(|e| anyhow::anyhow!("cannot create the OpenAPI client of {app_id}: {e}"))?;
            Ok(Snapshotter::new(
                Arc::new(api),
                sink.clone(),
                snapshot_metrics.clone(),
                app_id,
            ))
        };
        let single = match config.openapi.client.clone() {
            Some(client) => Some(make(client, None)?),
            None => None,
        };
        let mut listed = HashMap::new();
        for app in &config.apps.0 {
            let Some(app_secret) = app.app_secret.clone() else {
                continue;
            };
            // The single app's client settings (base, rate, timeout), with
            // this app's credentials.
            let client = config.openapi.client_for(app.app_id.clone(), app_secret);
            let store = match (app.kind, tickets) {
                (AppKind::SelfBuilt, _) => None,
                (AppKind::Store, Some(tickets)) => Some(StoreApp::new(tickets.clone())),
                (AppKind::Store, None) => continue,
            };
            listed.insert(app.app_id.clone(), make(client, store)?);
        }
        Ok(Snapshotters { single, listed })
    }

    /// The snapshotter of the app an event was sent to.
    pub fn of_app(&self, app_id: Option<&str>) -> Option<&Snapshotter> {
        app_id
            .and_then(|id| self.listed.get(id))
            .or(self.single.as_ref())
    }

    /// The single app's (the snapshot command, `POST /snapshot`).
    pub fn single(&self) -> Option<&Snapshotter> {
        self.single.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.single.is_none() && self.listed.is_empty()
    }

    /// The listed apps that can be snapshotted, by App ID.
    pub fn listed(&self) -> impl Iterator<Item = (&str, &Snapshotter)> {
        self.listed.iter().map(|(id, s)| (id.as_str(), s))
    }
}

impl Snapshotters {
    /// Once the internal topic is read, asks Feishu to push the ticket of
    /// every store app that still has none (in the background).
    pub fn ask_for_missing_tickets(&self) {
        for (_, snapshotter) in self.listed() {
            let snapshotter = snapshotter.clone();
            tokio::spawn(async move { snapshotter.api().ask_for_missing_ticket().await });
        }
    }
}
