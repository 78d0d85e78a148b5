//! HTTP ingress: the callback endpoint, the only route of its listener (the
//! operator endpoints are in `admin`, on their own). Maps every outcome to
//! its documented status code (docs/endpoints.md, "Answers").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::metrics::{outcome, Ingress as Via, Metrics};
use crate::pipeline::{self, Answer, Pipeline};

const WEBHOOK: Via = Via::Webhook;
use crate::protocol::{Inbound, Matched, Rejection, SignatureHeaders, Slot};
use crate::reload::SharedVerifier;

/// Seconds Feishu is told to wait before retrying after a 503. Feishu uses
/// its own schedule; the header is for other clients and for humans.
const RETRY_AFTER_SECS: &str = "15";

/// Unsigned requests refused with an encrypt key configured are answered no
/// sooner than this after they arrived: decrypting (with each configured key,
/// two during a rotation) and parsing even a body at the size limit takes a
/// fraction of it, so where the work stopped (base64, padding, JSON, token,
/// which key) does not show in the time to answer.
const UNSIGNED_ANSWER_FLOOR: Duration = Duration::from_millis(20);

pub struct Ingress {
    /// Replaced when the secret files change (`crate::reload`).
    pub verifier: Arc<SharedVerifier>,
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub publish_deadline: Duration,
    pub body_limit: usize,
    pub body_timeout: Duration,
}

/// The callback listener's routes: each path with the ingress (the
/// verifier of one app) that checks what arrives on it, and nothing else,
/// so that an ingress routing the callback host publishes no operator
/// endpoint.
pub fn router(paths: Vec<(String, Arc<Ingress>)>) -> Router {
    let mut router = Router::new();
    for (path, ingress) in paths {
        ingress
            .metrics
            .register_secret_slots(ingress.verifier.current().configured());
        router = router.route(&path, post(event).with_state(ingress));
    }
    router
        // Defence in depth: no input is known to panic a handler, but if one
        // ever does, answer 500 (Feishu retries) instead of resetting the
        // connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            // The panic hook has logged where; the body says nothing more.
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }))
}

struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(m: &'a Metrics) -> Self {
        m.in_flight_requests.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight_requests.dec();
    }
}

async fn event(State(s): State<Arc<Ingress>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let _guard = InFlight::enter(&s.metrics);
    let response = handle_event(&s, &headers, body, started).await;
    s.metrics
        .observe_request(WEBHOOK, started.elapsed().as_secs_f64());
    response
}

async fn handle_event(s: &Ingress, headers: &HeaderMap, body: Body, started: Instant) -> Response {
    let deadline = started + s.publish_deadline;
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    let bytes = if declared.is_some_and(|n| n > s.body_limit as u64) {
        Err(BodyError::TooLarge)
    } else {
        read_body(body, s.body_limit, s.body_timeout).await
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            s.metrics.count_rejected(WEBHOOK, "body_too_large");
            warn!(
                reason = "body_too_large",
                limit = s.body_limit,
                "rejected request"
            );
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        Err(BodyError::Timeout) => {
            s.metrics.count_rejected(WEBHOOK, "body_timeout");
            warn!(
                reason = "body_timeout",
                "rejected request: body not received in time"
            );
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            );
        }
        Err(BodyError::Read) => {
            s.metrics.count_rejected(WEBHOOK, "body_read");
            warn!(
                reason = "body_read",
                "rejected request: body could not be read"
            );
            return error(StatusCode::BAD_REQUEST, "request body could not be read");
        }
    };

    let signature = SignatureHeaders {
        timestamp: header_str(headers, "x-lark-request-timestamp"),
        nonce: header_str(headers, "x-lark-request-nonce"),
        signature: header_str(headers, "x-lark-signature"),
    };
    let verified = s
        .verifier
        .current()
        .verify_matched(&bytes, signature, SystemTime::now());
    if let Ok((_, matched)) = &verified {
        count_matched(&s.metrics, *matched);
    }
    let event = match verified.map(|(inbound, _)| inbound) {
        Ok(Inbound::Challenge(challenge)) => {
            s.metrics.count(WEBHOOK, outcome::CHALLENGE);
            info!(outcome = outcome::CHALLENGE, "answered url_verification");
            return json(
                StatusCode::OK,
                serde_json::json!({ "challenge": challenge }),
            );
        }
        Ok(Inbound::Event(e)) => e,
        Err(rejection) => {
            s.metrics.count_rejected(WEBHOOK, rejection.label());
            warn!(reason = rejection.label(), detail = %rejection.detail(), "rejected request");
            if matches!(rejection, Rejection::Unsigned(_)) {
                // The answer is the same whatever decryption found; so is its
                // time, as far as a floor well above the work can make it.
                tokio::time::sleep_until(started + UNSIGNED_ANSWER_FLOOR).await;
            }
            let status = if rejection.is_auth_failure() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            return error(status, &rejection.to_string());
        }
    };

    let event_id = event.event_id().unwrap_or_default().to_owned();
    let event_type = event.event_type().to_owned();
    let answer = s.pipeline.handle(event, deadline).await;
    pipeline::report(&s.metrics, WEBHOOK, &event_id, &event_type, &answer);
    match answer {
        Answer::Published
        | Answer::Duplicate
        | Answer::DeadLettered { .. }
        | Answer::Ignored(_) => success(),
        Answer::Unavailable(why) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &why.to_string());
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            r
        }
    }
}

/// Whether a request has matched the previous encrypt key, or token, in
/// this process yet.
static PREVIOUS_KEY_MATCHED: AtomicBool = AtomicBool::new(false);
static PREVIOUS_TOKEN_MATCHED: AtomicBool = AtomicBool::new(false);

/// Counts which value of each secret an accepted request matched, and says
/// once per process (per secret) that the previous value is still in use:
/// the rotation is not over until it stops being matched.
fn count_matched(metrics: &Metrics, matched: Matched) {
    metrics.secret_matched.count(matched);
    for (slot, first, secret, setting) in [
        (
            matched.encrypt_key,
            &PREVIOUS_KEY_MATCHED,
            crate::metrics::secret::ENCRYPT_KEY,
            "FEISHU_ENCRYPT_KEY_PREVIOUS",
        ),
        (
            matched.verification_token,
            &PREVIOUS_TOKEN_MATCHED,
            crate::metrics::secret::VERIFICATION_TOKEN,
            "FEISHU_VERIFICATION_TOKEN_PREVIOUS",
        ),
    ] {
        if slot == Some(Slot::Previous)
            && !first.load(Ordering::Relaxed)
            && !first.swap(true, Ordering::Relaxed)
        {
            // Names the setting, never its value.
            info!(
                secret,
                setting,
                "a request matched the previous value: Feishu still uses it, keep {setting} \
                 until feishu_bridge_secret_matched_total{{slot=\"previous\"}} stops growing \
                 (logged once per process)"
            );
        }
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Read,
}

/// Reads the whole body, refusing more than `limit` bytes whether or not
/// Content-Length told the truth, and giving up after `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Read),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The answer to every accepted event: the same bytes each time, so not
/// built (a JSON tree, its serialization) per request.
fn success() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(Bytes::from_static(br#"{"msg":"success"}"#)),
    )
        .into_response()
}

fn error(status: StatusCode, reason: &str) -> Response {
    json(status, serde_json::json!({ "error": reason }))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}
