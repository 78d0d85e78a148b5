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
    /// The listed apps', by App ID; `None` for a listed app without its
    /// `app_secret` (its chats are not snapshotted, least of all as
    /// another app).
    listed: HashMap<String, Option<Snapshotter>>,
    /// The listed apps' App IDs by their names in the list.
    names: HashMap<String, String>,
}

/// Why a listed app's name has no snapshotter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotSnapshotted {
    #[error("no app named {0} is listed in BRIDGE_APPS_FILE")]
    Unknown(String),
    #[error("app {0} has no app_secret in BRIDGE_APPS_FILE: its chats cannot be listed")]
    NoSecret(String),
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
        let names = config
            .apps
            .0
            .iter()
            .map(|a| (a.name.clone(), a.app_id.clone()))
            .collect();
        for app in &config.apps.0 {
            let Some(app_secret) = app.app_secret.clone() else {
                listed.insert(app.app_id.clone(), None);
                continue;
            };
            // The single app's client settings (base, rate, timeout), with
            // this app's credentials.
            let client = config.openapi.client_for(app.app_id.clone(), app_secret);
            let store = match (app.kind, tickets) {
                (AppKind::SelfBuilt, _) => None,
                (AppKind::Store, Some(tickets)) => Some(StoreApp::new(tickets.clone())),
                (AppKind::Store, None) => {
                    listed.insert(app.app_id.clone(), None);
                    continue;
                }
            };
            listed.insert(app.app_id.clone(), Some(make(client, store)?));
        }
        Ok(Snapshotters {
            single,
            listed,
            names,
        })
    }

    /// The snapshotter of the app an event was sent to: a listed app's
    /// own (none without its secret), else the single app's.
    pub fn of_app(&self, app_id: Option<&str>) -> Option<&Snapshotter> {
        match app_id.and_then(|id| self.listed.get(id)) {
            Some(listed) => listed.as_ref(),
            None => self.single.as_ref(),
        }
    }

    /// A listed app's, by its name in the list (`POST /snapshot?app=`).
    pub fn named(&self, name: &str) -> Result<&Snapshotter, NotSnapshotted> {
        let id = self
            .names
            .get(name)
            .ok_or_else(|| NotSnapshotted::Unknown(name.to_owned()))?;
        self.listed
            .get(id)
            .and_then(Option::as_ref)
            .ok_or_else(|| NotSnapshotted::NoSecret(name.to_owned()))
    }

    /// The single app's (the snapshot command, `POST /snapshot`).
    pub fn single(&self) -> Option<&Snapshotter> {
        self.single.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.single.is_none() && self.listed.values().all(Option::is_none)
    }

    /// The listed apps that can be snapshotted, by App ID.
    pub fn listed(&self) -> impl Iterator<Item = (&str, &Snapshotter)> {
        self.listed
            .iter()
            .filter_map(|(id, s)| Some((id.as_str(), s.as_ref()?)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_snapshotted_as_its_own_app_or_not_at_all() {
        let path = std::env::temp_dir().join(format!("fkb-per-app-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"apps":[{"name":"hr","app_id":"cli_hr","encrypt_key":"k","app_secret":"s"},
                        {"name":"it","app_id":"cli_it","encrypt_key":"k2"}]}"#,
        )
        .unwrap();
        let config = crate::config::validate_args(&[
            "--apps-file",
            path.to_str().unwrap(),
            "--app-id",
            "cli_single",
            "--app-secret",
            "single-secret",
        ])
        .unwrap();
        let metrics = Metrics::new();
        let sink = Sink::new(&config, metrics.clone()).unwrap();
        let s = Snapshotters::new(&config, &sink, &metrics, None).unwrap();
        let app_of = |id: Option<&str>| s.of_app(id).map(|s| s.api().app_id().to_owned());
        assert_eq!(app_of(Some("cli_hr")).as_deref(), Some("cli_hr"));
        // A listed app without its secret is not listed as another app.
        assert_eq!(app_of(Some("cli_it")), None);
        assert_eq!(app_of(Some("cli_single")).as_deref(), Some("cli_single"));
        assert_eq!(app_of(None).as_deref(), Some("cli_single"));
        assert_eq!(s.listed().count(), 1);
        assert_eq!(s.named("hr").map(|s| s.api().app_id()), Ok("cli_hr"));
        assert_eq!(
            s.named("it").err(),
            Some(NotSnapshotted::NoSecret("it".into()))
        );
        assert_eq!(
            s.named("ops").err(),
            Some(NotSnapshotted::Unknown("ops".into()))
        );
        let _ = std::fs::remove_file(&path);
    }
}
