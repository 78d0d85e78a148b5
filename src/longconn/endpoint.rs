//! Getting a connection: endpoint discovery (`POST /callback/ws/endpoint`
//! with the app's credentials) and the WebSocket handshake, with Feishu's
//! answers sorted into retryable and fatal as the official SDKs sort them.

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ConfigUpdate;
use crate::config::LongConnectionConfig;

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

// Codes of the endpoint answer and of the handshake headers (oapi-sdk-go
// ws/const.go).
const OK: i64 = 0;
const SYSTEM_BUSY: i64 = 1;
const FORBIDDEN: i64 = 403;
const AUTH_FAILED: i64 = 514;
const EXCEED_CONN_LIMIT: i64 = 1_000_040_350;
const INTERNAL_ERROR: i64 = 1_000_040_343;

/// Largest WebSocket message accepted. Events are kilobytes; the bridge's
/// own body limit applies to the reassembled event.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Worth another try later (busy, network, 5xx, odd answers).
    #[error("{0}")]
    Retryable(String),
    /// Feishu said no for good (credentials, banned app, too many connections).
    #[error("{0}")]
    Fatal(String),
}

use ConnectError::{Fatal, Retryable};

/// An open connection and what came with it.
pub struct Connected {
    pub ws: WsStream,
    /// Goes into every ping's `service` field.
    pub service_id: i32,
    /// Identifies the connection in logs (Feishu's `conn_id`).
    pub device_id: String,
    pub config: Option<ConfigUpdate>,
}

#[derive(Deserialize)]
struct EndpointAnswer {
    code: i64,
    #[serde(default)]
    msg: String,
    data: Option<EndpointData>,
}

#[derive(Deserialize)]
struct EndpointData {
    #[serde(rename = "URL", default)]
    url: String,
    #[serde(rename = "ClientConfig")]
    client_config: Option<ConfigUpdate>,
}

pub async fn connect(
    http: &reqwest::Client,
    config: &LongConnectionConfig,
) -> Result<Connected, ConnectError> {
    let (url, client_config) = discover(http, config).await?;
    let parsed = reqwest::Url::parse(&url)
        .map_err(|_| Retryable("the endpoint answered a URL that does not parse".into()))?;
    let query = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let service_id = query("service_id")
        .and_then(|v| v.parse::<i32>().ok())
        .ok_or_else(|| Retryable("the endpoint URL has no numeric service_id".into()))?;
    let device_id = query("device_id").unwrap_or_default();

    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true).await {
        Ok((ws, _)) => Ok(Connected {
            ws,
            service_id,
            device_id,
            config: client_config,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(classify_handshake(
            response.status().as_u16(),
            response.headers(),
        )),
        // The URL carries the connection's ticket: never put it in a message.
        Err(e) => Err(Retryable(format!(
            "websocket handshake failed: {}",
            without_url(&e.to_string(), &url)
        ))),
    }
}

/// Asks the open platform for a connection URL.
async fn discover(
    http: &reqwest::Client,
    config: &LongConnectionConfig,
) -> Result<(String, Option<ConfigUpdate>), ConnectError> {
    let body = serde_json::json!({
        "AppID": config.app_id,
        "AppSecret": config.app_secret.expose(),
    });
    let response = http
        .post(format!("{}/callback/ws/endpoint", config.domain))
        .header("locale", "zh")
        .json(&body)
        .send()
        .await
        .map_err(|e| Retryable(format!("endpoint discovery failed: {e}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Retryable(format!("endpoint discovery failed reading the answer: {e}")))?;
    if status != reqwest::StatusCode::OK {
        return Err(Retryable(format!(
            "endpoint discovery answered HTTP {status}"
        )));
    }
    let answer: EndpointAnswer = serde_json::from_slice(&bytes).map_err(|_| {
        Retryable("endpoint discovery answered something that is not its JSON".into())
    })?;
    let msg = short(&answer.msg);
    match answer.code {
        OK => {}
        SYSTEM_BUSY | INTERNAL_ERROR => {
            return Err(Retryable(format!(
                "endpoint discovery: Feishu is busy (code {}: {msg})",
                answer.code
            )))
        }
        code => {
            return Err(Fatal(format!(
                "endpoint discovery refused (code {code}: {msg})"
            )));
        }
    }
    match answer.data {
        Some(d) if !d.url.is_empty() => Ok((d.url, d.client_config)),
        _ => Err(Retryable("endpoint discovery answered no URL".into())),
    }
}

/// Sorts a refused handshake by Feishu's `Handshake-*` headers, falling back
/// to the HTTP status when they are missing (as oapi-sdk-go does).
fn classify_handshake(status: u16, headers: &HeaderMap) -> ConnectError {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let code = get("handshake-status")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(i64::from(status));
    let auth = get("handshake-autherrcode")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let msg = short(get("handshake-msg").unwrap_or(""));
    match code {
        AUTH_FAILED if auth == EXCEED_CONN_LIMIT => Fatal(format!(
            "handshake refused: too many connections for this app (514, {auth}: {msg})"
        )),
        FORBIDDEN => Fatal(format!("handshake refused: forbidden (403: {msg})")),
        _ => Retryable(format!(
            "handshake refused (status {code}, code {auth}: {msg})"
        )),
    }
}

/// At most 200 characters of a message from the other side, for logs.
fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

fn without_url(message: &str, url: &str) -> String {
    message.replace(url, "[connection URL]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn handshake_refusals_are_sorted_like_the_sdks() {
        let fatal = |c: &ConnectError| matches!(c, Fatal(_));
        assert!(fatal(&classify_handshake(
            400,
            &headers(&[
                ("handshake-status", "514"),
                ("handshake-autherrcode", "1000040350")
            ])
        )));
        assert!(!fatal(&classify_handshake(
            400,
            &headers(&[("handshake-status", "514"), ("handshake-autherrcode", "1")])
        )));
        assert!(fatal(&classify_handshake(
            400,
            &headers(&[("handshake-status", "403")])
        )));
        assert!(fatal(&classify_handshake(403, &headers(&[]))));
        assert!(!fatal(&classify_handshake(502, &headers(&[]))));
        assert!(!fatal(&classify_handshake(
            400,
            &headers(&[("handshake-status", "x")])
        )));
    }
}
