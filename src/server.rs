//! The HTTP/1 accept loop. `axum::serve` has no header-read timeout, no
//! connection cap and no drain deadline; a callback endpoint on the public
//! internet needs all three, so the loop is written out here.
//!
//! * Header-read timeout: a client that trickles its request line or headers,
//!   or keeps an idle keep-alive connection open without sending the next
//!   request, is disconnected after `header_timeout` (hyper starts the timer
//!   whenever it waits for a request head).
//! * Connection cap: at most `max_connections` are served at once; further
//!   clients wait in the kernel's backlog instead of costing memory here.
//! * Graceful shutdown: stop accepting, let in-flight requests finish, give
//!   up after `drain_timeout`. Idle keep-alive connections are not closed at
//!   once: a client may be writing its next request on one at that very
//!   moment, and a POST cut off that way is indistinguishable, for the
//!   client, from one that was taken in and dropped. For `IDLE_GRACE` every
//!   response carries `Connection: close` instead, so a client's next request
//!   on a live connection is still answered and it then reconnects (and is
//!   refused, which is unambiguous); only connections idle for the whole
//!   grace are closed. (The lifecycle test caught the immediate close: one
//!   request in a few runs came back as an incomplete message.)

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::Config;

/// How long, at shutdown, live connections keep being served with
/// `Connection: close` before the idle ones are closed.
const IDLE_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Which listener, for the logs: `callback` or `admin`.
    pub name: &'static str,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

/// The bridge's two listeners: callbacks (only when the webhook ingress is
/// on) and the operator endpoints. Bound before `run` so that tests and the
/// demo can ask for port 0 and read the address back.
pub struct Listeners {
    pub callback: Option<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds what `config` asks for; an error names the setting.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let callback = if config.ingress.webhook() {
            Some(bind(config.listen, "BRIDGE_LISTEN").await?)
        } else {
            None
        };
        let admin = bind(config.admin_listen, "BRIDGE_ADMIN_LISTEN").await?;
        Ok(Listeners { callback, admin })
    }

    pub fn callback_addr(&self) -> Option<SocketAddr> {
        self.callback.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
}

async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("invalid setting {setting}: cannot listen on {addr}: {e}"))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
/// Returns false when the drain deadline cut connections short.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let draining = Arc::new(AtomicBool::new(false));
    let app = {
        let draining = draining.clone();
        app.layer(axum::middleware::map_response(
            move |mut response: Response| {
                let close = draining.load(Ordering::Relaxed);
                async move {
                    if close {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    response
                }
            },
        ))
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = limits.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }

    // Connections the kernel has already accepted are clients that sent (or
    // are sending) a request: closing the listener would reset them. Take
    // what is queued, serve it without keep-alive, then close.
    let mut last_orders = http1::Builder::new();
    last_orders
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false);
    loop {
        let accepted = tokio::select! {
            biased;
            r = listener.accept() => r,
            _ = std::future::ready(()) => break,
        };
        let Ok((stream, _)) = accepted else { break };
        let conn = graceful.watch(
            last_orders
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    let open = graceful.count();
    info!(
        listener = limits.name,
        open_connections = open,
        "shutdown requested: not accepting; finishing in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + limits.drain_timeout;
    let grace_until = tokio::time::Instant::now() + IDLE_GRACE.min(limits.drain_timeout);
    while graceful.count() > 0 && tokio::time::Instant::now() < grace_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep_until(deadline) => {
            warn!(listener = limits.name, timeout_secs = limits.drain_timeout.as_secs(), "drain timeout: abandoning connections still in flight");
            false
        }
    }
}
