//! The ceiling: an HTTP/1 server on the same stack as the bridge (tokio,
//! hyper, axum) that reads the body and answers 200 without doing any work.

use axum::routing::post;
use axum::Router;

#[tokio::main]
async fn main() {
    let addr = std::env::var("BRIDGE_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let app = Router::new().route(
        "/webhook/event",
        post(|body: axum::body::Bytes| async move {
            let _ = body;
            (
                [("content-type", "application/json")],
                r#"{"msg":"success"}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("bare server listening on {addr}");
    axum::serve(listener, app).await.expect("serve");
}
