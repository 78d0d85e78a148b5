//! A store app's tokens (应用商店应用): its app access token comes from the
//! app_ticket Feishu pushes to the callback (shared by the replicas through
//! the internal topic, `crate::tickets`), and each tenant that installed
//! the app has a tenant access token of its own, made from the app access
//! token and the tenant's `tenant_key`. Both are cached and renewed before
//! they expire; one Feishu rejects is fetched anew once.
//!
//! Without a ticket (a new deployment, or one whose internal topic lost
//! it), Feishu is asked to push one again (`app_ticket/resend`), and calls
//! wait for it, as oapi-sdk-go does on its "app ticket is empty".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::token::TokenCache;
use super::{api, ApiError, Attempt, OpenApi};
use crate::secret::Secret;
use crate::tickets::Tickets;

/// How long a call waits for a missing ticket after asking for it.
const TICKET_WAIT: Duration = Duration::from_secs(60);
/// How long a starting replica waits for the internal topic to be read
/// before it decides a ticket is missing.
const LOAD_WAIT: Duration = Duration::from_secs(10);
/// At most one resend request per app in this long.
const RESEND_EVERY: Duration = Duration::from_secs(30);

pub struct StoreApp {
    tickets: Tickets,
    app_token: TokenCache,
    tenants: Mutex<HashMap<String, Arc<TokenCache>>>,
    last_resend: Mutex<Option<Instant>>,
}

impl StoreApp {
    pub fn new(tickets: Tickets) -> Self {
        StoreApp {
            tickets,
            app_token: TokenCache::default(),
            tenants: Mutex::new(HashMap::new()),
            last_resend: Mutex::new(None),
        }
    }

    /// `tenant`'s access token, from the cache or made anew.
    pub(super) async fn tenant_token(
        &self,
        api: &OpenApi,
        tenant: Option<&str>,
    ) -> Result<Secret, ApiError> {
        let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
            return Err(ApiError::Permanent {
                api: api::TOKEN,
                code: 0,
                msg: "a store app's calls are made in a tenant, and none is known here".into(),
            });
        };
        let cache = self.cache_of(tenant).await;
        cache.get(|| self.fetch_tenant_token(api, tenant)).await
    }

    /// Drops `token` (Feishu rejected it) from `tenant`'s cache.
    pub(super) async fn forget(&self, tenant: Option<&str>, token: &Secret) {
        if let Some(tenant) = tenant {
            self.cache_of(tenant).await.forget(token).await;
        }
    }

    async fn cache_of(&self, tenant: &str) -> Arc<TokenCache> {
        self.tenants
            .lock()
            .await
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }

    async fn fetch_tenant_token(
        &self,
        api: &OpenApi,
        tenant: &str,
    ) -> Result<(Secret, Duration), ApiError> {
        let renewed = std::sync::atomic::AtomicBool::new(false);
        api.retrying(api::TOKEN, || async {
            let app_token = match self.app_token.get(|| self.fetch_app_token(api)).await {
                Ok(t) => t,
                Err(e) => return Attempt::Fatal(e),
            };
            let body = serde_json::json!({
                "app_access_token": app_token.expose(),
                "tenant_key": tenant,
            });
            match api
                .token_attempt(api::TOKEN, "/open-apis/auth/v3/tenant_access_token", &body)
                .await
            {
                // The app access token was refused: made anew once.
                Attempt::TokenRejected(code, msg) => {
                    self.app_token.forget(&app_token).await;
                    if renewed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        Attempt::Failed(ApiError::Auth {
                            api: api::TOKEN,
                            code,
                            msg,
                        })
                    } else {
                        Attempt::Again("token_renewed")
                    }
                }
                other => other,
            }
        })
        .await
    }

    /// The app access token from the newest ticket; a missing ticket is
    /// asked for and waited for.
    async fn fetch_app_token(&self, api: &OpenApi) -> Result<(Secret, Duration), ApiError> {
        let app_id = api.app_id();
        let ticket = match self.ticket(api).await {
            Some(t) => t,
            None => {
                return Err(ApiError::Retriable {
                    api: api::APP_TOKEN,
                    detail: format!(
                        "no app_ticket for {app_id} within {} s of asking Feishu to push it again",
                        TICKET_WAIT.as_secs()
                    ),
                })
            }
        };
        let body = serde_json::json!({
            "app_id": app_id,
            "app_secret": api.config.app_secret.expose(),
            "app_ticket": ticket.expose(),
        });
        let result = api
            .retrying(api::APP_TOKEN, || {
                api.token_attempt(api::APP_TOKEN, "/open-apis/auth/v3/app_access_token", &body)
            })
            .await;
        if let Err(ApiError::Permanent { code, .. }) = &result {
            // A ticket Feishu no longer takes (it keeps one valid for a
            // while after the next): ask for a fresh one for the next call.
            warn!(
                app_id,
                code, "store app: the app_ticket was refused; asking Feishu to push it again"
            );
            self.resend(api).await;
        }
        result
    }

    /// The newest ticket; if there is none once the internal topic is read,
    /// asks Feishu for one and waits for it.
    async fn ticket(&self, api: &OpenApi) -> Option<Secret> {
        let app_id = api.app_id();
        if let Some(t) = self.tickets.get(app_id) {
            return Some(t);
        }
        let _ = tokio::time::timeout(LOAD_WAIT, self.tickets.wait_loaded()).await;
        if let Some(t) = self.tickets.get(app_id) {
            return Some(t);
        }
        self.resend(api).await;
        self.tickets.wait(app_id, TICKET_WAIT).await
    }

    /// `POST /open-apis/auth/v3/app_ticket/resend`, at most once per
    /// [`RESEND_EVERY`]: the ticket then arrives as an event, at whichever
    /// replica, and reaches this one through the internal topic.
    pub async fn resend(&self, api: &OpenApi) {
        let app_id = api.app_id();
        {
            let mut last = self.last_resend.lock().await;
            if last.is_some_and(|at| at.elapsed() < RESEND_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let body = serde_json::json!({
            "app_id": app_id,
            "app_secret": api.config.app_secret.expose(),
        });
        let result = api
            .retrying(api::TICKET_RESEND, || api.resend_attempt(&body))
            .await;
        self.tickets.metrics().resent(app_id, result.is_ok());
        match result {
            Ok(()) => info!(
                app_id,
                "store app: asked Feishu to push the app_ticket again"
            ),
            Err(e) => {
                warn!(app_id, error = %e, "store app: asking Feishu to push the app_ticket again failed")
            }
        }
    }
}

impl OpenApi {
    /// For a store app: once the internal topic is read, asks Feishu to
    /// push the app_ticket if none is known. Nothing for a self-built app.
    pub async fn ask_for_missing_ticket(&self) {
        let Some(store) = &self.store else {
            return;
        };
        store.tickets.wait_loaded().await;
        if store.tickets.get(self.app_id()).is_none() {
            store.resend(self).await;
        }
    }
}

impl OpenApi {
    /// Whether this is a store app's client (its calls need a tenant).
    pub fn is_store(&self) -> bool {
        self.store.is_some()
    }
}
