//! The callback's secrets read again from their files while the bridge
//! runs, so that rotating the Encrypt Key or the Verification Token needs no
//! rollout: Kubernetes rewrites a mounted Secret in place (within about a
//! minute of the change), and the next check applies it to every request
//! that starts afterwards.
//!
//! A change is read with the checks of start-up. One that fails them (a file
//! that cannot be read, an empty current value, a previous value without a
//! current one) changes nothing: the running secrets stay, the reason is
//! logged once (by setting name, never a value), `secret_reload_failing` is
//! 1 until the files can be used again, and readiness does not change: the
//! pod still verifies what it verified before. Values given directly (not
//! in files) cannot change; with none in files there is nothing to watch.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{ConfigError, WebhookSecrets};
use crate::metrics::{reload_outcome, Metrics};
use crate::protocol::Verifier;

/// The verifier every callback request uses, replaced whole when the
/// secrets change: a request holds the one it started with.
pub struct SharedVerifier {
    current: RwLock<Arc<Verifier>>,
}

impl SharedVerifier {
    pub fn new(verifier: Verifier) -> Self {
        SharedVerifier {
            current: RwLock::new(Arc::new(verifier)),
        }
    }

    pub fn current(&self) -> Arc<Verifier> {
        // A writer cannot panic half-way (it swaps an Arc), so a poisoned
        // lock still holds a whole verifier.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, verifier: Verifier) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(verifier);
    }
}

/// The verifier of a set of secrets.
pub fn verifier(secrets: &WebhookSecrets, window: Option<Duration>) -> Verifier {
    Verifier::new(
        secrets.encrypt_key.as_ref(),
        secrets.verification_token.clone(),
        window,
    )
    .with_previous(
        secrets.encrypt_key_previous.as_ref(),
        secrets.verification_token_previous.clone(),
    )
}

/// What one look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Unchanged,
    /// The new secrets are in use; the settings whose value changed.
    Applied(Vec<&'static str>),
    /// The files cannot be used; why (names settings, never values).
    Failed(String),
}

/// Reads one set of secrets (the single app's, or one listed app's).
pub type Read = Box<dyn Fn() -> Result<WebhookSecrets, ConfigError> + Send + Sync>;

/// Reads the secret files again and applies what changed.
pub struct Reloader {
    read: Read,
    /// The listed app these secrets are for; `None` for the single app.
    app: Option<String>,
    window: Option<Duration>,
    applied: WebhookSecrets,
    /// The last failure logged, so that a broken file is told once.
    failure: Option<String>,
    shared: Arc<SharedVerifier>,
    metrics: Metrics,
}

impl Reloader {
    /// Keeps `shared` current with what `read` gives: the single app's
    /// secrets (`app` `None`, from their files), or a listed app's (from
    /// `BRIDGE_APPS_FILE`). `applied`: the secrets `shared` was built with.
    pub fn new(
        app: Option<String>,
        read: Read,
        window: Option<Duration>,
        applied: WebhookSecrets,
        shared: Arc<SharedVerifier>,
        metrics: Metrics,
    ) -> Self {
        Reloader {
            read,
            app,
            window,
            applied,
            failure: None,
            shared,
            metrics,
        }
    }

    /// One look at the files.
    pub fn check(&mut self) -> Checked {
        let m = &self.metrics.secret_reload;
        let app = self.app.as_deref().unwrap_or_default();
        let secrets = match (self.read)() {
            Ok(secrets) => secrets,
            Err(e) => {
                let reason = e.to_string();
                m.failing.set(1);
                if self.failure.as_ref() != Some(&reason) {
                    m.reloads.with_label_values(&[reload_outcome::FAILED]).inc();
                    warn!(app, reason = %reason, "a callback secret file changed but cannot be used; the running secrets stay until it is fixed");
                    self.failure = Some(reason.clone());
                }
                return Checked::Failed(reason);
            }
        };
        m.failing.set(0);
        if self.failure.take().is_some() && secrets == self.applied {
            info!(
                app,
                "the callback secret files can be used again; they hold the running secrets"
            );
        }
        if secrets == self.applied {
            return Checked::Unchanged;
        }
        let changed = changed(&self.applied, &secrets, self.app.is_some());
        let verifier = verifier(&secrets, self.window);
        self.metrics.register_secret_slots(verifier.configured());
        self.shared.replace(verifier);
        self.applied = secrets;
        m.reloads
            .with_label_values(&[reload_outcome::APPLIED])
            .inc();
        info!(app, settings = %changed.join(","), "callback secrets changed in their files; applied to every request from now on");
        Checked::Applied(changed)
    }

    /// Looks every `period`, until the task is dropped.
    pub async fn watch(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.check();
        }
    }
}

/// The settings whose value differs, by name: the single app's settings,
/// or a listed app's fields.
fn changed(before: &WebhookSecrets, after: &WebhookSecrets, listed: bool) -> Vec<&'static str> {
    [
        (
            ["FEISHU_ENCRYPT_KEY", "encrypt_key"],
            before.encrypt_key != after.encrypt_key,
        ),
        (
            ["FEISHU_VERIFICATION_TOKEN", "verification_token"],
            before.verification_token != after.verification_token,
        ),
        (
            ["FEISHU_ENCRYPT_KEY_PREVIOUS", "encrypt_key_previous"],
            before.encrypt_key_previous != after.encrypt_key_previous,
        ),
        (
            [
                "FEISHU_VERIFICATION_TOKEN_PREVIOUS",
                "verification_token_previous",
            ],
            before.verification_token_previous != after.verification_token_previous,
        ),
    ]
    .into_iter()
    .filter_map(|(names, differs)| differs.then_some(names[usize::from(listed)]))
    .collect()
}
