//! A stand-in for Feishu's OpenAPI (which these machines cannot reach),
//! speaking the documented shapes the snapshot client uses: the self-built
//! app's tenant access token, the chats the bot is in and a chat's members,
//! `{code, msg, data}` answers, `page_token`/`has_more` pagination (at most
//! 100 a page), tokens that expire or are revoked (code 99991663), and
//! frequency limits (HTTP 429, code 99991400, `x-ogw-ratelimit-reset`);
//! and a store app's: the app access token from an app_ticket, a tenant
//! access token per tenant (each listing only its tenant's chats), and the
//! ticket's resend request.
//! It holds the truth the tests compare against, and records every call.
// An answer is a whole `Response` (the stand-in is small and not hot).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const APP_ID: &str = "cli_9f5343c580712544";
pub const APP_SECRET: &str = "stand-in-app-secret-for-snapshots";
pub const TENANT: &str = "2ca1d211f64f6438";

#[derive(Debug, Clone, Default)]
pub struct ChatTruth {
    pub name: String,
    pub members: BTreeSet<String>,
}

#[derive(Default)]
pub struct StandInState {
    pub chats: BTreeMap<String, ChatTruth>,
    /// Lifetime of a token, in seconds (Feishu: 7200).
    pub token_expire_secs: u64,
    tokens: HashSet<String>,
    pub tokens_issued: u32,
    /// Every Nth API call (token calls excluded) is refused with 429.
    pub rate_limit_every: Option<u32>,
    /// Seconds in `x-ogw-ratelimit-reset`.
    pub rate_limit_reset_secs: u64,
    pub rate_limited: u32,
    /// After this many API calls, every issued token is revoked once.
    pub revoke_tokens_after: Option<u32>,
    pub tokens_rejected: u32,
    /// A chat whose member pages from this index on fail with HTTP 500.
    pub fail_members: BTreeMap<String, usize>,
    /// Delay before each member page.
    pub page_delay: Duration,
    api_calls: u32,
    /// When each API call (token calls included) arrived, and its path.
    pub calls: Vec<(Instant, String)>,
    /// The store app, when one is set up.
    pub store: Option<StoreTruth>,
    /// The tenant of each tenant access token a store app was given.
    token_tenants: HashMap<String, String>,
}

/// What the stand-in knows of its store app.
#[derive(Debug, Default)]
pub struct StoreTruth {
    pub app_id: String,
    pub app_secret: String,
    /// Tickets Feishu would take (it pushed them).
    pub valid_tickets: HashSet<String>,
    /// The ticket each app access token was made from, in order.
    pub app_tokens: Vec<(String, String)>,
    /// Tenant access tokens issued, per tenant.
    pub tenant_tokens: BTreeMap<String, u32>,
    /// `app_ticket/resend` requests.
    pub resends: u32,
    /// The tenant each of its chats is in.
    pub chat_tenants: BTreeMap<String, String>,
}

type Shared = Arc<Mutex<StandInState>>;

pub struct OpenApiStandIn {
    pub url: String,
    state: Shared,
    _runtime: std::thread::JoinHandle<()>,
}

impl OpenApiStandIn {
    pub fn start() -> OpenApiStandIn {
        let state: Shared = Arc::new(Mutex::new(StandInState {
            token_expire_secs: 7200,
            rate_limit_reset_secs: 1,
            ..StandInState::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route(
                "/open-apis/auth/v3/tenant_access_token/internal",
                post(token),
            )
            .route("/open-apis/auth/v3/app_access_token", post(app_token))
            .route("/open-apis/auth/v3/tenant_access_token", post(tenant_token))
            .route("/open-apis/auth/v3/app_ticket/resend", post(resend))
            .route("/open-apis/im/v1/chats", get(chats))
            .route("/open-apis/im/v1/chats/{chat_id}/members", get(members))
            .with_state(state.clone());
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        OpenApiStandIn {
            url,
            state,
            _runtime: runtime,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, StandInState> {
        self.state.lock().unwrap()
    }

    /// A chat of `n` members (`ou_<chat>_<i>`).
    pub fn add_chat(&self, chat_id: &str, n: usize) {
        let members = (0..n).map(|i| format!("ou_{chat_id}_{i:05}")).collect();
        self.state().chats.insert(
            chat_id.to_owned(),
            ChatTruth {
                name: format!("chat {chat_id}"),
                members,
            },
        );
    }

    /// Sets up a store app.
    pub fn store_app(&self, app_id: &str, app_secret: &str) {
        self.state().store = Some(StoreTruth {
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            ..StoreTruth::default()
        });
    }

    /// Feishu pushed `ticket`: it is taken for app access tokens from now on.
    pub fn push_ticket(&self, ticket: &str) {
        if let Some(store) = self.state().store.as_mut() {
            store.valid_tickets.insert(ticket.into());
        }
    }

    /// A chat of the store app in `tenant`, of `n` members.
    pub fn add_store_chat(&self, chat_id: &str, tenant: &str, n: usize) {
        self.add_chat(chat_id, n);
        if let Some(store) = self.state().store.as_mut() {
            store.chat_tenants.insert(chat_id.into(), tenant.into());
        }
    }

    pub fn truth(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.state()
            .chats
            .iter()
            .map(|(id, c)| (id.clone(), c.members.clone()))
            .collect()
    }
}

fn feishu_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, Json(json!({"code": code, "msg": msg}))).into_response()
}

async fn token(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    s.calls.push((Instant::now(), "token".into()));
    if body["app_id"] != APP_ID || body["app_secret"] != APP_SECRET {
        return feishu_error(StatusCode::OK, 10014, "app secret invalid");
    }
    s.tokens_issued += 1;
    let token = format!("t-stand-in-tenant-token-{}", s.tokens_issued);
    s.tokens.insert(token.clone());
    let expire = s.token_expire_secs;
    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire}))
        .into_response()
}

async fn app_token(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    s.calls.push((Instant::now(), "app_token".into()));
    let expire = s.token_expire_secs;
    let issued = s.tokens_issued + 1;
    let Some(store) = s.store.as_mut() else {
        return feishu_error(StatusCode::OK, 10003, "invalid app_id");
    };
    if body["app_id"] != store.app_id.as_str() || body["app_secret"] != store.app_secret.as_str() {
        return feishu_error(StatusCode::OK, 10014, "app secret invalid");
    }
    let ticket = body["app_ticket"].as_str().unwrap_or_default().to_owned();
    if !store.valid_tickets.contains(&ticket) {
        return feishu_error(StatusCode::OK, 10012, "app_ticket is invalid");
    }
    let token = format!("a-stand-in-app-token-{issued}");
    store.app_tokens.push((token.clone(), ticket));
    s.tokens_issued = issued;
    Json(json!({"code": 0, "msg": "ok", "app_access_token": token, "expire": expire}))
        .into_response()
}

async fn tenant_token(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    s.calls.push((Instant::now(), "store_tenant_token".into()));
    let expire = s.token_expire_secs;
    let issued = s.tokens_issued + 1;
    let Some(store) = s.store.as_mut() else {
        return feishu_error(StatusCode::OK, 10003, "invalid app_id");
    };
    let app_token = body["app_access_token"].as_str().unwrap_or_default();
    if !store.app_tokens.iter().any(|(t, _)| t == app_token) {
        return feishu_error(
            StatusCode::BAD_REQUEST,
            99991664,
            "invalid app access token",
        );
    }
    let tenant = body["tenant_key"].as_str().unwrap_or_default().to_owned();
    *store.tenant_tokens.entry(tenant.clone()).or_default() += 1;
    let token = format!("t-stand-in-{tenant}-{issued}");
    s.tokens_issued = issued;
    s.tokens.insert(token.clone());
    s.token_tenants.insert(token.clone(), tenant);
    Json(json!({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire}))
        .into_response()
}

async fn resend(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    s.calls.push((Instant::now(), "app_ticket_resend".into()));
    let Some(store) = s.store.as_mut() else {
        return feishu_error(StatusCode::OK, 10003, "invalid app_id");
    };
    if body["app_id"] != store.app_id.as_str() || body["app_secret"] != store.app_secret.as_str() {
        return feishu_error(StatusCode::OK, 10014, "app secret invalid");
    }
    store.resends += 1;
    Json(json!({"code": 0, "msg": "ok"})).into_response()
}

/// The checks every API call goes through: frequency limit, then token.
fn admit(s: &mut StandInState, headers: &HeaderMap, path: &str) -> Result<(), Response> {
    s.calls.push((Instant::now(), path.to_owned()));
    s.api_calls += 1;
    if s.revoke_tokens_after == Some(s.api_calls) {
        s.tokens.clear();
    }
    if let Some(every) = s.rate_limit_every {
        if s.api_calls.is_multiple_of(every) {
            s.rate_limited += 1;
            let mut r = feishu_error(
                StatusCode::TOO_MANY_REQUESTS,
                99991400,
                "request trigger frequency limit",
            );
            r.headers_mut().insert(
                "x-ogw-ratelimit-reset",
                s.rate_limit_reset_secs.to_string().parse().unwrap(),
            );
            return Err(r);
        }
    }
    let token = bearer(headers);
    if !s.tokens.contains(token) {
        s.tokens_rejected += 1;
        return Err(feishu_error(
            StatusCode::BAD_REQUEST,
            99991663,
            "Invalid access token for authorization. Please make a request with token attached.",
        ));
    }
    Ok(())
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
}

/// `page_size` (at most 100) and the offset a `page_token` stands for.
fn page(q: &BTreeMap<String, String>) -> Result<(usize, usize), Response> {
    let size: usize = q
        .get("page_size")
        .map(|s| s.parse().unwrap_or(0))
        .unwrap_or(20);
    if !(1..=100).contains(&size) {
        return Err(feishu_error(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: page_size",
        ));
    }
    let offset = match q.get("page_token") {
        None => 0,
        Some(t) => match t.strip_prefix("pt_").and_then(|o| o.parse().ok()) {
            Some(o) => o,
            None => {
                return Err(feishu_error(
                    StatusCode::BAD_REQUEST,
                    99992402,
                    "invalid page_token",
                ))
            }
        },
    };
    Ok((size, offset))
}

fn page_of<T: Clone>(all: &[T], size: usize, offset: usize) -> (Vec<T>, Option<String>, bool) {
    let items: Vec<T> = all.iter().skip(offset).take(size).cloned().collect();
    let next = offset + items.len();
    let more = next < all.len();
    (items, more.then(|| format!("pt_{next}")), more)
}

async fn chats(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    if let Err(r) = admit(&mut s, &headers, "chats") {
        return r;
    }
    let (size, offset) = match page(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A store app's tenant token lists that tenant's chats only.
    let tenant = s.token_tenants.get(bearer(&headers)).cloned();
    let chat_tenants = s
        .store
        .as_ref()
        .map(|store| store.chat_tenants.clone())
        .unwrap_or_default();
    let all: Vec<Value> = s
        .chats
        .iter()
        .filter(|(id, _)| chat_tenants.get(*id) == tenant.as_ref())
        .map(|(id, c)| {
            json!({"chat_id": id, "avatar": "https://example.com/a.png", "name": c.name,
                   "description": "", "owner_id": "ou_owner", "owner_id_type": "open_id",
                   "external": false, "tenant_key": chat_tenants.get(id).map_or(TENANT, String::as_str),
                   "chat_status": "normal"})
        })
        .collect();
    let (items, token, more) = page_of(&all, size, offset);
    Json(json!({"code": 0, "msg": "success",
                "data": {"items": items, "page_token": token.unwrap_or_default(), "has_more": more}}))
    .into_response()
}

async fn members(
    State(state): State<Shared>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let delay = state.lock().unwrap().page_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    if let Err(r) = admit(&mut s, &headers, "members") {
        return r;
    }
    if q.get("member_id_type").map(String::as_str) != Some("open_id") {
        return feishu_error(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: member_id_type",
        );
    }
    let (size, offset) = match page(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if s.fail_members
        .get(&chat_id)
        .is_some_and(|from| offset / size >= *from)
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
    }
    let token = bearer(&headers);
    let tenant = s.token_tenants.get(token).cloned();
    let chat_tenant = s
        .store
        .as_ref()
        .and_then(|store| store.chat_tenants.get(&chat_id).cloned());
    // A store app's chat is listed only with its own tenant's token.
    if tenant != chat_tenant {
        return feishu_error(
            StatusCode::BAD_REQUEST,
            232011,
            "operator is not in the chat",
        );
    }
    let Some(chat) = s.chats.get(&chat_id) else {
        return feishu_error(
            StatusCode::BAD_REQUEST,
            232011,
            "operator is not in the chat",
        );
    };
    let all: Vec<Value> = chat
        .members
        .iter()
        .map(|m| {
            json!({"member_id_type": "open_id", "member_id": m, "name": format!("名 {m}"),
                        "tenant_key": chat_tenant.as_deref().unwrap_or(TENANT)})
        })
        .collect();
    let total = all.len();
    let (items, token, more) = page_of(&all, size, offset);
    Json(json!({"code": 0, "msg": "success",
                "data": {"items": items, "page_token": token.unwrap_or_default(), "has_more": more, "member_total": total}}))
    .into_response()
}
