//! The callback paths a deployment serves: `BRIDGE_EVENT_PATH` for the
//! single app (its `FEISHU_*` settings), and `<BRIDGE_EVENT_PATH>/<name>`
//! for each app of `BRIDGE_APPS_FILE`. Each path has the verifier of its own
//! app, so an event is checked with that app's keys only (another app's key
//! gets the uniform 401), and each verifier is kept current from its files
//! (`crate::reload`). Every path feeds the same pipeline.

use std::sync::Arc;

use tracing::info;

use crate::config::apps::Apps;
use crate::config::{Config, ConfigError, WebhookSecrets};
use crate::ingress::Ingress;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reload::{self, Reloader, SharedVerifier};

/// The paths, and the tasks that re-read their secrets (stopped on drop).
pub struct Callbacks {
    pub paths: Vec<(String, Arc<Ingress>)>,
    _reloaders: Vec<Reloading>,
}

/// A reloader's task, aborted when dropped.
struct Reloading(tokio::task::JoinHandle<()>);

impl Drop for Reloading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn callbacks(config: &Config, pipeline: &Pipeline, metrics: &Metrics) -> Callbacks {
    let ingress = |verifier: Arc<SharedVerifier>| {
        Arc::new(Ingress {
            verifier,
            pipeline: pipeline.clone(),
            metrics: metrics.clone(),
            publish_deadline: config.publish_deadline,
            body_limit: config.body_limit_bytes,
            body_timeout: config.body_timeout,
        })
    };
    let window = config.timestamp_window;
    let mut paths = Vec::new();
    let mut reloaders = Vec::new();
    let period = config.secret_reload_interval;

    if config.serve_single_app {
        let secrets = WebhookSecrets {
            encrypt_key: config.encrypt_key.clone(),
            verification_token: config.verification_token.clone(),
            encrypt_key_previous: config.encrypt_key_previous.clone(),
            verification_token_previous: config.verification_token_previous.clone(),
        };
        let verifier = Arc::new(SharedVerifier::new(reload::verifier(&secrets, window)));
        if let Some(period) = period.filter(|_| config.secret_sources.has_files()) {
            let sources = config.secret_sources.clone();
            let reloader = Reloader::new(
                None,
                Box::new(move || sources.read()),
                window,
                secrets,
                verifier.clone(),
                metrics.clone(),
            );
            reloaders.push(Reloading(tokio::spawn(reloader.watch(period))));
        }
        paths.push((config.event_path.clone(), ingress(verifier)));
    }

    let base = config.event_path.trim_end_matches('/');
    for app in config.apps.callbacks() {
        let verifier = Arc::new(SharedVerifier::new(reload::verifier(&app.secrets, window)));
        if let (Some(period), Some(file)) = (period, config.apps_file.clone()) {
            let name = app.name.clone();
            let read = Box::new(move || -> Result<WebhookSecrets, ConfigError> {
                Apps::read(&file)?
                    .0
                    .into_iter()
                    .find(|a| a.name == name)
                    .map(|a| a.secrets)
                    .ok_or_else(|| ConfigError {
                        setting: crate::config::apps::SETTING,
                        reason: format!(
                            "app {name} is no longer listed; the list's apps change on a restart"
                        ),
                    })
            });
            let reloader = Reloader::new(
                Some(app.name.clone()),
                read,
                window,
                app.secrets.clone(),
                verifier.clone(),
                metrics.clone(),
            );
            reloaders.push(Reloading(tokio::spawn(reloader.watch(period))));
        }
        let path = format!("{base}/{}", app.name);
        info!(app = %app.name, app_id = %app.app_id, kind = ?app.kind, %path, "callbacks of a listed app");
        paths.push((path, ingress(verifier)));
    }
    if !reloaders.is_empty() {
        info!(
            interval_ms = period.map_or(0, |p| p.as_millis() as u64),
            "callback secret files are read again while running (FEISHU_SECRET_RELOAD_INTERVAL_MS)"
        );
    }
    Callbacks {
        paths,
        _reloaders: reloaders,
    }
}
