//! The service's own settings: its two listeners, the callback path, and
//! the limits and deadlines of a request, of readiness and of shutdown.

use std::net::SocketAddr;

use clap::Args;

use super::{invalid, positive, ConfigError};
use crate::config::IngressMode;

#[derive(Debug, Args)]
#[command(next_help_heading = "Service")]
pub struct ServerArgs {
    /// Address of the callback endpoint (BRIDGE_EVENT_PATH, nothing else);
    /// bound only when the webhook ingress is on.
    #[arg(long, env = "BRIDGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the operator endpoints: /metrics, /readyz and /healthz.
    /// Kept off the callback port so that an ingress routing the callback
    /// host does not publish them.
    #[arg(long, env = "BRIDGE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Path Feishu posts event callbacks to.
    #[arg(long, env = "BRIDGE_EVENT_PATH", default_value = "/webhook/event")]
    pub event_path: String,

    /// How long a request waits for Kafka's acknowledgement before answering 503, in ms.
    #[arg(long, env = "BRIDGE_PUBLISH_DEADLINE_MS", default_value_t = 2500)]
    pub publish_deadline_ms: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BRIDGE_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// How long a client may take to send its request body, in ms.
    #[arg(long, env = "BRIDGE_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// How long a client may take to send a request's line and headers, and
    /// how long an idle keep-alive connection is kept, in ms.
    #[arg(long, env = "BRIDGE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Most client connections served at once; more wait in the listen backlog.
    #[arg(long, env = "BRIDGE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// How often readiness asks Kafka for the topics' metadata, in ms.
    #[arg(long, env = "BRIDGE_READINESS_INTERVAL_MS", default_value_t = 2000)]
    pub readiness_interval_ms: u64,

    /// On shutdown, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "BRIDGE_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// On shutdown, how long the producer may take to flush, in seconds.
    #[arg(long, env = "BRIDGE_FLUSH_TIMEOUT_SECS", default_value_t = 10)]
    pub flush_timeout_secs: u64,
}

impl ServerArgs {
    pub fn validate(&self, ingress: IngressMode) -> Result<(), ConfigError> {
        if !self.event_path.starts_with('/') || self.event_path.len() < 2 {
            return Err(invalid(
                "BRIDGE_EVENT_PATH",
                format!(
                    "must be an absolute path like /webhook/event, got {:?}",
                    self.event_path
                ),
            ));
        }
        if ingress.webhook() && same_port(self.listen, self.admin_listen) {
            return Err(invalid(
                "BRIDGE_ADMIN_LISTEN",
                format!(
                    "{} overlaps BRIDGE_LISTEN {}: the operator endpoints need their own port",
                    self.admin_listen, self.listen
                ),
            ));
        }
        positive("BRIDGE_PUBLISH_DEADLINE_MS", self.publish_deadline_ms)?;
        positive("BRIDGE_BODY_LIMIT_BYTES", self.body_limit_bytes as u64)?;
        positive("BRIDGE_BODY_TIMEOUT_MS", self.body_timeout_ms)?;
        positive("BRIDGE_READINESS_INTERVAL_MS", self.readiness_interval_ms)?;
        positive("BRIDGE_HEADER_TIMEOUT_MS", self.header_timeout_ms)?;
        positive("BRIDGE_MAX_CONNECTIONS", self.max_connections as u64)?;
        Ok(())
    }
}

/// Whether two listen addresses would contend for one port (port 0 asks the
/// system for a free one, so it never does).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::super::validate_args;

    #[test]
    fn the_admin_listener_has_its_own_port() {
        let cfg = validate_args(&[]).expect("valid");
        assert_eq!(cfg.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cfg.admin_listen, "0.0.0.0:9090".parse().unwrap());
        for admin in ["0.0.0.0:8080", "127.0.0.1:8080"] {
            let err = validate_args(&["--admin-listen", admin]).unwrap_err();
            assert_eq!(err.setting, "BRIDGE_ADMIN_LISTEN", "{admin}");
        }
        // Port 0 is a fresh port each time; a long connection binds no callback port.
        for args in [
            &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"][..],
            &[
                "--ingress",
                "long-connection",
                "--app-id",
                "cli_x",
                "--app-secret",
                "s",
                "--admin-listen",
                "0.0.0.0:8080",
            ][..],
        ] {
            validate_args(args).expect("valid");
        }
    }

    #[test]
    fn the_event_path_is_absolute() {
        let err = validate_args(&["--event-path", "webhook"]).unwrap_err();
        assert_eq!(err.setting, "BRIDGE_EVENT_PATH");
    }
}
