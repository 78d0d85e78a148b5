//! The operator endpoints, `/healthz`, `/readyz`, `/metrics` and
//! `POST /snapshot?chat_id=…[&app=…][&tenant_key=…]`, served on their own listener
//! (`BRIDGE_ADMIN_LISTEN`). They say why the bridge is not
//! ready and count rejections by reason: fine for the cluster's probes and
//! Prometheus, not for whoever can reach the callback URL.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::readiness::Readiness;
use crate::record::Trigger;
use crate::snapshot::{NotSnapshotted, SnapshotError, Snapshotters};

pub struct Admin {
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub pipeline: Pipeline,
    /// Every app's with OpenAPI credentials: `POST /snapshot` answers 503
    /// for an app without them.
    pub snapshotters: Snapshotters,
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/snapshot", post(snapshot))
        .with_state(admin)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Admin>>) -> Response {
    match s.readiness.not_ready_because() {
        None => {
            let mut body = String::from("ready\n");
            for note in s.readiness.notes() {
                body.push_str(&format!("note: {note}\n"));
            }
            (StatusCode::OK, body).into_response()
        }
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Arc<Admin>>) -> Response {
    // Gauges that are cheap to read are refreshed at scrape time rather
    // than on every request.
    s.metrics.dedup_entries.set(s.pipeline.dedup().len() as i64);
    s.metrics
        .producer_queue
        .set(s.pipeline.sink().queue_depth() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SnapshotQuery {
    chat_id: Option<String>,
    /// A listed app's name (`BRIDGE_APPS_FILE`); the single app without it.
    app: Option<String>,
    /// The tenant the chat is in: required for a store app.
    tenant_key: Option<String>,
}

/// Lists the chat's members and publishes its snapshot; answers when the
/// last part is acknowledged (200), or why not.
async fn snapshot(State(s): State<Arc<Admin>>, Query(q): Query<SnapshotQuery>) -> Response {
    let error = |status: StatusCode, message: String| {
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    };
    let Some(chat_id) = q.chat_id.filter(|c| !c.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "chat_id is required".into());
    };
    let app = q.app.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let snapshotter = match app {
        None => s.snapshotters.single().ok_or_else(|| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "snapshots need the app's credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET (or name a listed app with app=)".into(),
            )
        }),
        Some(name) => s.snapshotters.named(name).map_err(|e| {
            let status = match e {
                NotSnapshotted::Unknown(_) => StatusCode::NOT_FOUND,
                NotSnapshotted::NoSecret(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, e.to_string())
        }),
    };
    let snapshotter = match snapshotter {
        Ok(s) => s,
        Err(response) => return response,
    };
    let tenant_key = q
        .tenant_key
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if snapshotter.api().is_store() && tenant_key.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "tenant_key is required for a store app's chat (its tokens are per tenant)".into(),
        );
    }
    match snapshotter
        .chat(chat_id.trim(), None, tenant_key, Trigger::Admin)
        .await
    {
        Ok(p) => Json(serde_json::json!({
            "chat_id": chat_id.trim(),
            "snapshot_id": p.snapshot_id,
            "members": p.members,
            "records": p.parts,
        }))
        .into_response(),
        Err(e @ SnapshotError::List(crate::openapi::ApiError::Permanent { .. })) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
