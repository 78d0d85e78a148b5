//! The operator endpoints, `/healthz`, `/readyz` and `/metrics`, served on
//! their own listener (`BRIDGE_ADMIN_LISTEN`). They say why the bridge is not
//! ready and count rejections by reason: fine for the cluster's probes and
//! Prometheus, not for whoever can reach the callback URL.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::readiness::Readiness;

pub struct Admin {
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub pipeline: Pipeline,
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Admin>>) -> Response {
    match s.readiness.not_ready_because() {
        None => (StatusCode::OK, "ready\n").into_response(),
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
