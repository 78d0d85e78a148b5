//! A stand-in for Feishu's long-connection side, for tests and the
//! `long_connection` example: endpoint discovery over HTTP (axum) and the
//! WebSocket (tokio-tungstenite, so that it can also misbehave below the
//! WebSocket layer). It hands out a ClientConfig, pushes events (whole or in
//! fragments, interleaved, duplicated), records acks and re-pushes what was
//! not acknowledged with code 200, answers pings, and misbehaves on command:
//! stops answering (a half-open connection), drops TCP in the middle of a
//! frame, refuses endpoint discovery or the handshake, or sends a new
//! ClientConfig in its next pong.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State as AxumState;
use axum::routing::post;
use axum::{Json, Router};
use feishu_kafka_bridge::longconn::frame::{header, Frame, METHOD_CONTROL, METHOD_DATA};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const APP_ID: &str = "cli_standin0000000001";
pub const APP_SECRET: &str = "stand-in-app-secret";
pub const SERVICE_ID: i32 = 77;

/// The ClientConfig handed out with the endpoint, in seconds.
#[derive(Clone, Debug)]
pub struct Options {
    pub ping_interval: i64,
    pub reconnect_interval: i64,
    pub reconnect_nonce: i64,
    pub reconnect_count: i64,
    /// How long after a `{"code":500}` ack the event is pushed again.
    pub repush_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ping_interval: 1,
            reconnect_interval: 1,
            reconnect_nonce: 0,
            reconnect_count: -1,
            repush_after: Duration::from_millis(300),
        }
    }
}

/// What endpoint discovery answers.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Ok,
    /// `{"code": N}`: 1 and 1000040343 are "busy", anything else a refusal.
    Code(i64),
}

/// What the WebSocket handshake does.
#[derive(Clone, Debug)]
pub enum Handshake {
    Accept,
    /// Refuse with this HTTP status and Feishu's `handshake-*` headers.
    Refuse {
        status: i64,
        auth_code: i64,
    },
}

#[derive(Clone, Debug)]
pub struct AckSeen {
    pub message_id: String,
    pub code: i64,
    pub biz_rt: Option<String>,
    pub seq_id: u64,
}

enum Cmd {
    Send(Vec<Frame>),
    DropMidFrame,
}

struct Pending {
    frames: Vec<Frame>,
    acked: bool,
}

#[derive(Default)]
pub struct State {
    pub endpoint_calls: usize,
    pub handshakes: usize,
    pub connections: usize,
    pub pings: Vec<Instant>,
    pub acks: Vec<AckSeen>,
    pub close_frames: usize,
    pub connected_at: Vec<Instant>,
    endpoint: Option<Endpoint>,
    handshake: Option<Handshake>,
    silent: bool,
    next_pong_config: Option<String>,
    conn: Option<mpsc::UnboundedSender<Cmd>>,
    outbox: BTreeMap<String, Pending>,
    next_seq: u64,
}

#[derive(Clone)]
pub struct StandIn {
    pub base_url: String,
    /// The app this stand-in's connections are for (endpoint discovery
    /// checks its ID and secret).
    pub app_id: String,
    app_secret: String,
    ws_addr: SocketAddr,
    options: Options,
    state: Arc<Mutex<State>>,
}

impl StandIn {
    pub async fn start(options: Options) -> StandIn {
        let mut one = StandIn::start_apps(options, &[(APP_ID, APP_SECRET)]).await;
        one.remove(0)
    }

    /// One open platform for several apps: endpoint discovery on one base
    /// URL answers each app (by its AppID and AppSecret) with a WebSocket of
    /// its own, whose state is the returned stand-in of that app.
    pub async fn start_apps(options: Options, apps: &[(&str, &str)]) -> Vec<StandIn> {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", http.local_addr().unwrap());
        let mut all = Vec::new();
        for (app_id, app_secret) in apps {
            let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let me = StandIn {
                base_url: base_url.clone(),
                app_id: (*app_id).to_owned(),
                app_secret: (*app_secret).to_owned(),
                ws_addr: ws.local_addr().unwrap(),
                options: options.clone(),
                state: Arc::new(Mutex::new(State {
                    endpoint: Some(Endpoint::Ok),
                    handshake: Some(Handshake::Accept),
                    next_seq: 1,
                    ..State::default()
                })),
            };
            let accept = me.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = ws.accept().await {
                    tokio::spawn(accept.clone().connection(stream));
                }
            });
            all.push(me);
        }
        let app = Router::new()
            .route("/callback/ws/endpoint", post(endpoint))
            .with_state(Arc::new(all.clone()));
        tokio::spawn(async move { axum::serve(http, app).await });
        all
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set_endpoint(&self, e: Endpoint) {
        self.state().endpoint = Some(e);
    }

    pub fn set_handshake(&self, h: Handshake) {
        self.state().handshake = Some(h);
    }

    /// Stop answering and pushing, but keep the TCP connection open: to the
    /// client the connection is now half-open.
    pub fn go_silent(&self) {
        self.state().silent = true;
    }

    pub fn drop_mid_frame(&self) {
        if let Some(c) = &self.state().conn {
            let _ = c.send(Cmd::DropMidFrame);
        }
    }

    pub fn send_config_in_next_pong(&self, config: Value) {
        self.state().next_pong_config = Some(config.to_string());
    }

    /// Pushes events, each split into the given number of fragments; with
    /// `interleave`, the fragments of different events alternate. Returns
    /// the message_ids.
    pub fn push(&self, events: &[(Vec<u8>, usize)], interleave: bool) -> Vec<String> {
        let mut st = self.state();
        let mut ids = Vec::new();
        let mut sets = Vec::new();
        for (payload, parts) in events {
            let id = format!("msg_{}", st.next_seq);
            let frames = fragment(&mut st, &id, "event", payload, *parts);
            st.outbox.insert(
                id.clone(),
                Pending {
                    frames: frames.clone(),
                    acked: false,
                },
            );
            ids.push(id);
            sets.push(frames);
        }
        let frames = if interleave {
            let longest = sets.iter().map(Vec::len).max().unwrap_or(0);
            (0..longest)
                .flat_map(|i| sets.iter().filter_map(move |s| s.get(i).cloned()))
                .collect()
        } else {
            sets.into_iter().flatten().collect()
        };
        if let Some(c) = &st.conn {
            let _ = c.send(Cmd::Send(frames));
        }
        ids
    }

    /// Sends a card frame (which the bridge must ignore, unanswered).
    pub fn push_card(&self) {
        let mut st = self.state();
        let frames = fragment(&mut st, "card_1", "card", b"{}", 1);
        if let Some(c) = &st.conn {
            let _ = c.send(Cmd::Send(frames));
        }
    }

    pub fn acked_ok(&self, ids: &[String]) -> bool {
        let st = self.state();
        ids.iter()
            .all(|id| st.outbox.get(id).is_some_and(|p| p.acked))
    }

    /// Waits until every one of `ids` was acked with code 200.
    pub async fn wait_acked(&self, ids: &[String], within: Duration) {
        let give_up = Instant::now() + within;
        while !self.acked_ok(ids) {
            assert!(
                Instant::now() < give_up,
                "stand-in: not acked within {within:?}; acks: {:?}",
                self.state().acks
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `cond` every 20 ms for at most `within`.
    pub async fn wait(&self, within: Duration, what: &str, cond: impl Fn(&State) -> bool) {
        let give_up = Instant::now() + within;
        loop {
            if cond(&self.state()) {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "stand-in: not within {within:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        let n = self.state().endpoint_calls;
        format!(
            "ws://{}/ws/v2?fpid=1&device_id=standin-{n}&access_key=k&service_id={SERVICE_ID}&ticket=secret-ticket-{n}",
            self.ws_addr
        )
    }

    async fn connection(self, stream: TcpStream) {
        let refuse = match self.state().handshake.clone() {
            Some(Handshake::Refuse { status, auth_code }) => Some((status, auth_code)),
            _ => None,
        };
        self.state().handshakes += 1;
        // The signature is tungstenite's; the large error type is its too.
        #[allow(clippy::result_large_err)]
        let callback = |_: &Request, response: Response| -> Result<Response, ErrorResponse> {
            match refuse {
                None => Ok(response),
                Some((status, auth)) => {
                    let mut r = ErrorResponse::new(Some("refused".into()));
                    *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(
                        if status == 514 { 400 } else { status as u16 },
                    )
                    .unwrap();
                    let h = r.headers_mut();
                    h.insert("handshake-status", status.to_string().parse().unwrap());
                    h.insert("handshake-msg", "refused by the stand-in".parse().unwrap());
                    h.insert("handshake-autherrcode", auth.to_string().parse().unwrap());
                    Err(r)
                }
            }
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let backlog: Vec<Frame> = {
            let mut st = self.state();
            st.connections += 1;
            st.connected_at.push(Instant::now());
            st.silent = false;
            st.conn = Some(tx);
            // Feishu pushes again what was never acknowledged.
            st.outbox
                .values()
                .filter(|p| !p.acked)
                .flat_map(|p| p.frames.clone())
                .collect()
        };
        if !backlog.is_empty() && send_all(&mut ws, backlog).await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                m = ws.next() => Next::In(m),
                c = rx.recv() => Next::Cmd(c),
            };
            match next {
                Next::Cmd(Some(Cmd::Send(frames))) => {
                    if self.state().silent {
                        continue;
                    }
                    if send_all(&mut ws, frames).await.is_err() {
                        break;
                    }
                }
                Next::Cmd(Some(Cmd::DropMidFrame)) => {
                    // A binary frame header announcing 256 bytes, then 3 of them.
                    let raw = ws.get_mut();
                    let _ = raw.write_all(&[0x82, 0x7e, 0x01, 0x00, 1, 2, 3]).await;
                    let _ = raw.flush().await;
                    break;
                }
                Next::Cmd(None) => break,
                Next::In(None) | Next::In(Some(Err(_))) => break,
                Next::In(Some(Ok(Message::Close(_)))) => {
                    self.state().close_frames += 1;
                    let _ = ws.close(None).await;
                    break;
                }
                Next::In(Some(Ok(Message::Binary(bytes)))) => {
                    if self.state().silent {
                        continue;
                    }
                    let Ok(frame) = Frame::decode_bytes(&bytes) else {
                        continue;
                    };
                    if let Some(reply) = self.on_frame(frame) {
                        if ws
                            .send(Message::Binary(reply.to_bytes().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
                Next::In(Some(Ok(_))) => {}
            }
        }
        let mut st = self.state();
        st.conn = None;
    }

    fn on_frame(&self, frame: Frame) -> Option<Frame> {
        let mut st = self.state();
        if frame.method == METHOD_CONTROL && frame.header("type") == Some("ping") {
            st.pings.push(Instant::now());
            let mut pong = Frame::ping(frame.service);
            pong.headers = vec![header("type", "pong")];
            pong.payload = st.next_pong_config.take().map(String::into_bytes);
            return Some(pong);
        }
        if frame.method == METHOD_DATA && frame.header("biz_rt").is_some() {
            let code = frame
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                .and_then(|v| v["code"].as_i64())
                .unwrap_or(-1);
            let message_id = frame.header("message_id").unwrap_or_default().to_owned();
            st.acks.push(AckSeen {
                message_id: message_id.clone(),
                code,
                biz_rt: frame.header("biz_rt").map(str::to_owned),
                seq_id: frame.seq_id,
            });
            if code == 200 {
                if let Some(p) = st.outbox.get_mut(&message_id) {
                    p.acked = true;
                }
            } else if let Some(p) = st.outbox.get(&message_id) {
                let frames = p.frames.clone();
                let me = self.clone();
                let after = self.options.repush_after;
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let st = me.state();
                    if let Some(c) = &st.conn {
                        let _ = c.send(Cmd::Send(frames));
                    }
                });
            }
        }
        None
    }
}

enum Next {
    In(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Cmd(Option<Cmd>),
}

async fn send_all(ws: &mut WebSocketStream<TcpStream>, frames: Vec<Frame>) -> Result<(), ()> {
    for f in frames {
        ws.send(Message::Binary(f.to_bytes().into()))
            .await
            .map_err(|_| ())?;
    }
    Ok(())
}

fn fragment(st: &mut State, id: &str, kind: &str, payload: &[u8], parts: usize) -> Vec<Frame> {
    let parts = parts.max(1);
    let size = payload.len().div_ceil(parts).max(1);
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(size).collect()
    };
    let sum = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(seq, chunk)| {
            st.next_seq += 1;
            Frame {
                seq_id: st.next_seq,
                log_id: 1000 + st.next_seq,
                service: SERVICE_ID,
                method: METHOD_DATA,
                headers: vec![
                    header("type", kind),
                    header("message_id", id),
                    header("sum", &sum.to_string()),
                    header("seq", &seq.to_string()),
                    header("trace_id", &format!("trace-{id}")),
                ],
                payload: Some(chunk.to_vec()),
                ..Frame::ping(0)
            }
        })
        .collect()
}

async fn endpoint(
    AxumState(apps): AxumState<Arc<Vec<StandIn>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    // An unknown AppID is counted against the first app, and refused.
    let me = apps
        .iter()
        .find(|s| body["AppID"] == s.app_id.as_str())
        .unwrap_or(&apps[0]);
    let answer = {
        let mut st = me.state();
        st.endpoint_calls += 1;
        st.endpoint.clone().unwrap_or(Endpoint::Ok)
    };
    if body["AppID"] != me.app_id.as_str() || body["AppSecret"] != me.app_secret.as_str() {
        return Json(json!({"code": 10014, "msg": "app secret invalid"}));
    }
    match answer {
        Endpoint::Code(code) => Json(json!({"code": code, "msg": "stand-in says no"})),
        Endpoint::Ok => {
            let o = &me.options;
            Json(
                json!({"code": 0, "msg": "ok", "data": {"URL": me.url(), "ClientConfig": {
                "PingInterval": o.ping_interval, "ReconnectCount": o.reconnect_count,
                "ReconnectInterval": o.reconnect_interval, "ReconnectNonce": o.reconnect_nonce}}}),
            )
        }
    }
}
