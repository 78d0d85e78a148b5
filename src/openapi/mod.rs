//! A client of Feishu's OpenAPI, for what the bridge reads there: the chats
//! its app's bot is in and their members ([`im`]), as the self-built app
//! (tenant access token, [`token`]), paced under Feishu's frequency limits
//! ([`limit`]), with a deadline on every call and errors typed by what the
//! caller can do about them.
//!
//! Shapes follow the official SDKs (oapi-sdk-go `service/im/v1`,
//! `service/auth`, its token manager): every answer is `{code, msg, data}`,
//! `code` 0 meaning success.

pub mod im;
pub mod limit;
mod metrics;
mod store;
pub mod token;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::{debug, warn};

pub use metrics::OpenApiMetrics;
pub use store::StoreApp;

use crate::secret::Secret;
use limit::Limiter;
use token::TokenCache;

/// Feishu's code for "frequency limit hit" (HTTP 429, or 400 on older APIs).
pub const RATE_LIMITED: i64 = 99991400;
/// The chat APIs' own per-chat limit ("the request has been rate limited",
/// HTTP 400): waited out like the other.
const CHAT_RATE_LIMITED: i64 = 232019;
/// Codes of an access token Feishu does not accept: oapi-sdk-go's three
/// (tenant token invalid, app token invalid, token malformed) and a missing
/// Authorization header. The token is fetched anew once and the call
/// retried (the Go SDK retries with the cached token, which a revoked token
/// does not survive).
const TOKEN_REJECTED: [i64; 4] = [99991661, 99991663, 99991664, 99991671];
/// Codes of app credentials Feishu refuses when a token is asked for.
const CREDENTIALS_REFUSED: [i64; 3] = [10003, 10014, 99991543];
/// How many times one call waits for a frequency limit before giving up.
const MAX_RATE_LIMIT_WAITS: u32 = 20;
/// Wait when Feishu says the limit was hit without saying for how long.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// A reset header above this is not trusted as is.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The API names of the `api` label.
pub mod api {
    pub const TOKEN: &str = "tenant_access_token";
    /// A store app's app access token (from its app_ticket).
    pub const APP_TOKEN: &str = "app_access_token";
    /// Asking Feishu to push a store app's app_ticket again.
    pub const TICKET_RESEND: &str = "app_ticket_resend";
    pub const LIST_CHATS: &str = "list_chats";
    pub const LIST_MEMBERS: &str = "list_chat_members";
    pub const ALL: [&str; 5] = [TOKEN, APP_TOKEN, TICKET_RESEND, LIST_CHATS, LIST_MEMBERS];
}

/// Why a call failed, by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The app's credentials or its token were refused: a setting or a
    /// permission to fix, not a call to repeat.
    #[error("{api}: Feishu refused the app's credentials (code {code}: {msg})")]
    Auth {
        api: &'static str,
        code: i64,
        msg: String,
    },
    /// Feishu answered with an error that repeating will not change (a
    /// missing permission, a chat the bot is not in, a bad argument).
    #[error("{api}: Feishu answered code {code}: {msg}")]
    Permanent {
        api: &'static str,
        code: i64,
        msg: String,
    },
    /// The network, a timeout, a 5xx, or a frequency limit that did not
    /// lift: repeating later may succeed.
    #[error("{api}: {detail}")]
    Retriable { api: &'static str, detail: String },
}

impl ApiError {
    /// The `outcome` label of the calls metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Auth { .. } => "auth",
            ApiError::Permanent { .. } => "permanent",
            ApiError::Retriable { .. } => "retriable",
        }
    }
}

/// Where and as whom the client calls.
#[derive(Debug, Clone)]
pub struct OpenApiConfig {
    /// Base URL of the open platform, without a trailing slash.
    pub base: String,
    pub app_id: String,
    pub app_secret: Secret,
    /// Client-wide cap on calls per second.
    pub rate_per_sec: u32,
    /// Deadline of one HTTP call.
    pub timeout: Duration,
    /// Attempts of one call that fails in a retriable way (not counting
    /// frequency-limit waits).
    pub attempts: u32,
}

pub struct OpenApi {
    config: OpenApiConfig,
    http: reqwest::Client,
    /// A self-built app's one tenant access token.
    token: TokenCache,
    /// A store app's tokens, per tenant; `None` for a self-built app.
    store: Option<StoreApp>,
    limiter: Limiter,
    metrics: OpenApiMetrics,
}

/// `{code, msg, data}`.
#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    data: Option<T>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    tenant_access_token: Option<String>,
    app_access_token: Option<String>,
    /// Seconds.
    expire: Option<u64>,
}

/// One attempt's result, before the retry policy.
enum Attempt<T> {
    Done(T),
    /// Feishu said the API's frequency limit was hit: wait this long.
    RateLimited(Duration),
    /// Feishu refused the token (its code and message).
    TokenRejected(i64, String),
    /// Try again at once (the outcome label says why).
    Again(&'static str),
    Failed(ApiError),
    /// Ends the call as it is (counted where it happened).
    Fatal(ApiError),
}

impl OpenApi {
    pub fn new(config: OpenApiConfig, metrics: OpenApiMetrics) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("feishu-kafka-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OpenApi {
            limiter: Limiter::new(config.rate_per_sec),
            config,
            http,
            token: TokenCache::default(),
            store: None,
            metrics,
        })
    }

    /// The client of a store app, whose tokens come from its app_ticket.
    pub fn store(
        config: OpenApiConfig,
        metrics: OpenApiMetrics,
        store: StoreApp,
    ) -> Result<Self, reqwest::Error> {
        let mut api = OpenApi::new(config, metrics)?;
        api.store = Some(store);
        Ok(api)
    }

    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    pub fn metrics(&self) -> &OpenApiMetrics {
        &self.metrics
    }

    /// `GET {base}{path}` as the app (in `tenant`, for a store app),
    /// `data` decoded as `T`. A token Feishu rejects is fetched anew once.
    async fn get<T: DeserializeOwned>(
        &self,
        tenant: Option<&str>,
        api: &'static str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let renewed = std::sync::atomic::AtomicBool::new(false);
        self.retrying(api, || async {
            let token = match self.token(tenant).await {
                Ok(t) => t,
                Err(e) => return Attempt::Fatal(e),
            };
            match self.attempt::<T>(api, path, query, &token).await {
                Attempt::TokenRejected(code, msg) => {
                    self.forget(tenant, &token).await;
                    if renewed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        Attempt::Failed(ApiError::Auth { api, code, msg })
                    } else {
                        Attempt::Again("token_renewed")
                    }
                }
                other => other,
            }
        })
        .await
    }

    /// The retry policy of every call: frequency limits waited out as
    /// Feishu says (the wait holds for the whole API), retriable failures
    /// retried with backoff, the rest returned; every attempt counted.
    async fn retrying<T, F, Fut>(&self, api: &'static str, mut once: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut failures = 0;
        let mut waits = 0;
        loop {
            match once().await {
                Attempt::Done(data) => {
                    self.metrics.count(api, "ok");
                    return Ok(data);
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Again(why) => self.metrics.count(api, why),
                Attempt::RateLimited(wait) => {
                    self.metrics.count(api, "rate_limited");
                    self.metrics.rate_limit_wait(api);
                    waits += 1;
                    if waits > MAX_RATE_LIMIT_WAITS {
                        return Err(ApiError::Retriable {
                            api,
                            detail: format!(
                                "frequency limit still hit after {MAX_RATE_LIMIT_WAITS} waits"
                            ),
                        });
                    }
                    debug!(
                        api,
                        wait_ms = wait.as_millis() as u64,
                        "OpenAPI frequency limit: waiting"
                    );
                    self.limiter.block(api, wait);
                }
                Attempt::TokenRejected(code, msg)
                | Attempt::Failed(ApiError::Auth { code, msg, .. }) => {
                    let e = ApiError::Auth { api, code, msg };
                    self.metrics.count(api, e.kind());
                    return Err(e);
                }
                Attempt::Failed(e) => {
                    self.metrics.count(api, e.kind());
                    failures += 1;
                    if !matches!(e, ApiError::Retriable { .. }) || failures >= self.config.attempts
                    {
                        return Err(e);
                    }
                    warn!(api, error = %e, attempt = failures, "OpenAPI call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(failures.min(6)))
                        .await;
                }
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        api: &'static str,
        path: &str,
        query: &[(&str, &str)],
        token: &Secret,
    ) -> Attempt<T> {
        // Paced here, right before it leaves: the token it needs was fetched
        // (and paced) first.
        self.limiter.acquire(api).await;
        let started = std::time::Instant::now();
        let sent = self
            .http
            .get(format!("{}{path}", self.config.base))
            .query(query)
            .bearer_auth(token.expose())
            .send()
            .await;
        self.metrics.observe(api, started.elapsed());
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(transport(api, &e)),
        };
        let status = response.status();
        let reset = rate_limit_reset(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Failed(transport(api, &e)),
        };
        let envelope: Option<Envelope<T>> = serde_json::from_slice(&body).ok();
        let code = envelope.as_ref().map(|e| e.code);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || code == Some(RATE_LIMITED)
            || code == Some(CHAT_RATE_LIMITED)
        {
            return Attempt::RateLimited(reset.unwrap_or(DEFAULT_RATE_LIMIT_WAIT));
        }
        match envelope {
            Some(e) if TOKEN_REJECTED.contains(&e.code) => Attempt::TokenRejected(e.code, e.msg),
            Some(Envelope {
                code: 0,
                data: Some(data),
                ..
            }) if status.is_success() => Attempt::Done(data),
            _ if status.is_server_error() => Attempt::Failed(ApiError::Retriable {
                api,
                detail: format!("HTTP {status}"),
            }),
            Some(e) if e.code != 0 => Attempt::Failed(ApiError::Permanent {
                api,
                code: e.code,
                msg: e.msg,
            }),
            _ => Attempt::Failed(ApiError::Retriable {
                api,
                detail: format!(
                    "HTTP {status} with an answer that is not Feishu's {{code, msg, data}}"
                ),
            }),
        }
    }

    /// The tenant access token, fetched when the cached one is due: the
    /// self-built app's, or a store app's for `tenant`.
    async fn token(&self, tenant: Option<&str>) -> Result<Secret, ApiError> {
        match &self.store {
            None => self.token.get(|| self.fetch_token()).await,
            Some(store) => store.tenant_token(self, tenant).await,
        }
    }

    /// Drops a token Feishu rejected.
    async fn forget(&self, tenant: Option<&str>, token: &Secret) {
        match &self.store {
            None => self.token.forget(token).await,
            Some(store) => store.forget(tenant, token).await,
        }
    }

    async fn fetch_token(&self) -> Result<(Secret, Duration), ApiError> {
        let body = serde_json::json!({
            "app_id": self.config.app_id,
            "app_secret": self.config.app_secret.expose(),
        });
        self.retrying(api::TOKEN, || {
            self.token_attempt(
                api::TOKEN,
                "/open-apis/auth/v3/tenant_access_token/internal",
                &body,
            )
        })
        .await
    }

    /// One `POST` of `body` to `path`, paced and timed as `api`: the
    /// status, Feishu's rate-limit reset and the answer when it decodes as
    /// `T`; an error only when nothing came back.
    async fn post<T: DeserializeOwned>(
        &self,
        api: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(reqwest::StatusCode, Option<Duration>, Option<T>), ApiError> {
        self.limiter.acquire(api).await;
        let started = std::time::Instant::now();
        let sent = self
            .http
            .post(format!("{}{path}", self.config.base))
            .json(body)
            .send()
            .await;
        self.metrics.observe(api, started.elapsed());
        let response = sent.map_err(|e| transport(api, &e))?;
        let status = response.status();
        let reset = rate_limit_reset(response.headers());
        Ok((status, reset, response.json().await.ok()))
    }

    /// One `POST` for a token (`api` names which: the tenant's or the
    /// app's), its answer classified as every call's.
    async fn token_attempt(
        &self,
        api: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Attempt<(Secret, Duration)> {
        let (status, reset, answer) = match self.post::<TokenAnswer>(api, path, body).await {
            Ok(posted) => posted,
            Err(e) => return Attempt::Failed(e),
        };
        // The token this call asked for, with its lifetime.
        let issued = answer
            .as_ref()
            .filter(|a| a.code == 0)
            .and_then(|a| {
                let token = match api {
                    api::APP_TOKEN => a.app_access_token.as_deref(),
                    _ => a.tenant_access_token.as_deref(),
                };
                token
                    .filter(|t| !t.is_empty())
                    .zip(a.expire.filter(|e| *e > 0))
            })
            .map(|(token, expire)| (Secret::new(token), Duration::from_secs(expire)));
        if let Some(issued) = issued {
            return Attempt::Done(issued);
        }
        match answer {
            _ if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                Attempt::RateLimited(reset.unwrap_or(DEFAULT_RATE_LIMIT_WAIT))
            }
            Some(a) if a.code == RATE_LIMITED => {
                Attempt::RateLimited(reset.unwrap_or(DEFAULT_RATE_LIMIT_WAIT))
            }
            Some(a) if TOKEN_REJECTED.contains(&a.code) => Attempt::TokenRejected(a.code, a.msg),
            _ if status.is_server_error() => Attempt::Failed(ApiError::Retriable {
                api,
                detail: format!("HTTP {status}"),
            }),
            Some(a) if CREDENTIALS_REFUSED.contains(&a.code) => Attempt::Failed(ApiError::Auth {
                api,
                code: a.code,
                msg: a.msg,
            }),
            Some(a) if a.code != 0 => Attempt::Failed(ApiError::Permanent {
                api,
                code: a.code,
                msg: a.msg,
            }),
            _ => Attempt::Failed(ApiError::Retriable {
                api,
                detail: format!("HTTP {status} without a token"),
            }),
        }
    }
}

impl OpenApi {
    /// One `POST` of the ticket resend request: only its code matters.
    async fn resend_attempt(&self, body: &serde_json::Value) -> Attempt<()> {
        let api = api::TICKET_RESEND;
        let path = "/open-apis/auth/v3/app_ticket/resend";
        let (status, reset, answer) = match self
            .post::<Envelope<serde::de::IgnoredAny>>(api, path, body)
            .await
        {
            Ok(posted) => posted,
            Err(e) => return Attempt::Failed(e),
        };
        match answer {
            _ if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                Attempt::RateLimited(reset.unwrap_or(DEFAULT_RATE_LIMIT_WAIT))
            }
            Some(a) if a.code == RATE_LIMITED => {
                Attempt::RateLimited(reset.unwrap_or(DEFAULT_RATE_LIMIT_WAIT))
            }
            Some(a) if a.code == 0 && status.is_success() => Attempt::Done(()),
            _ if status.is_server_error() => Attempt::Failed(ApiError::Retriable {
                api,
                detail: format!("HTTP {status}"),
            }),
            Some(a) if CREDENTIALS_REFUSED.contains(&a.code) => Attempt::Failed(ApiError::Auth {
                api,
                code: a.code,
                msg: a.msg,
            }),
            Some(a) => Attempt::Failed(ApiError::Permanent {
                api,
                code: a.code,
                msg: a.msg,
            }),
            None => Attempt::Failed(ApiError::Retriable {
                api,
                detail: format!("HTTP {status} with an answer that is not Feishu's {{code, msg}}"),
            }),
        }
    }
}

fn transport(api: &'static str, e: &reqwest::Error) -> ApiError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // reqwest's message holds the URL, which holds no secret (the token is
    // a header, the app secret a body).
    ApiError::Retriable {
        api,
        detail: format!("{what}: {e}"),
    }
}

/// `x-ogw-ratelimit-reset`: seconds until the limit lifts.
fn rate_limit_reset(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get("x-ogw-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(MAX_RATE_LIMIT_WAIT))
}

/// A page of a listing: `items`, and where the next one starts.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(default)]
    pub page_token: Option<String>,
    #[serde(default)]
    pub has_more: bool,
    /// Only some listings say it (members: `member_total`).
    #[serde(default, rename = "member_total")]
    pub total: Option<u64>,
}
