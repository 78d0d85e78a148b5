//! Feishu's OpenAPI, which the bridge calls for membership snapshots: as
//! the app of `FEISHU_APP_ID` / `FEISHU_APP_SECRET` on the platform of
//! `FEISHU_DOMAIN`, under a client-wide rate cap, with a deadline per call.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::feishu::FeishuArgs;
use super::{invalid, positive, ConfigError};
use crate::openapi::OpenApiConfig;

/// Whether a chat is listed and its snapshot published when the bot is
/// added to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotMode {
    /// On when the app's credentials are configured, else off (one line
    /// at start-up says so).
    Auto,
    /// On; the app's credentials are required.
    On,
    Off,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Snapshots (Feishu's OpenAPI)")]
pub struct OpenApiArgs {
    /// Snapshot a chat's members when the bot is added to it (`auto`: when
    /// FEISHU_APP_ID and FEISHU_APP_SECRET are set).
    #[arg(long, env = "BRIDGE_SNAPSHOTS", value_enum, default_value_t = SnapshotMode::Auto)]
    pub snapshots: SnapshotMode,

    /// Most calls per second to Feishu's OpenAPI, per app (each app's client paces its own calls).
    #[arg(long, env = "FEISHU_API_RATE_PER_SEC", default_value_t = 10)]
    pub api_rate_per_sec: u32,

    /// Deadline of one OpenAPI call, in ms.
    #[arg(long, env = "FEISHU_API_TIMEOUT_MS", default_value_t = 10_000)]
    pub api_timeout_ms: u64,
}

/// What the OpenAPI settings came to.
#[derive(Debug, Clone)]
pub struct OpenApiSettings {
    /// The client's settings, when the app's credentials are configured.
    pub client: Option<OpenApiConfig>,
    /// Snapshot a chat when the bot is added to it.
    pub on_bot_added: bool,
    /// Where and how every client calls (a listed app's takes its own
    /// credentials): base URL, rate cap, deadline.
    base: String,
    rate_per_sec: u32,
    timeout: Duration,
}

/// Attempts of one call that fails in a retriable way.
const ATTEMPTS: u32 = 4;

impl OpenApiSettings {
    /// The client settings of a listed app.
    pub fn client_for(&self, app_id: String, app_secret: crate::secret::Secret) -> OpenApiConfig {
        OpenApiConfig {
            base: self.base.clone(),
            app_id,
            app_secret,
            rate_per_sec: self.rate_per_sec,
            timeout: self.timeout,
            attempts: ATTEMPTS,
        }
    }
}

impl OpenApiArgs {
    pub fn validate(&self, feishu: &FeishuArgs) -> Result<OpenApiSettings, ConfigError> {
        positive("FEISHU_API_RATE_PER_SEC", u64::from(self.api_rate_per_sec))?;
        positive("FEISHU_API_TIMEOUT_MS", self.api_timeout_ms)?;
        let credentials = feishu.app_credentials()?;
        if self.snapshots == SnapshotMode::On && credentials.is_none() {
            return Err(invalid(
                "BRIDGE_SNAPSHOTS",
                "is on, which needs the app's credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET (or FEISHU_APP_SECRET_FILE)",
            ));
        }
        let mut settings = OpenApiSettings {
            client: None,
            on_bot_added: false,
            base: feishu.base_url()?,
            rate_per_sec: self.api_rate_per_sec,
            timeout: Duration::from_millis(self.api_timeout_ms),
        };
        settings.client =
            credentials.map(|(app_id, app_secret)| settings.client_for(app_id, app_secret));
        settings.on_bot_added = self.snapshots != SnapshotMode::Off && settings.client.is_some();
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate_args;

    #[test]
    fn snapshots_follow_the_credentials_unless_told_otherwise() {
        let cfg = validate_args(&[]).unwrap();
        assert!(cfg.openapi.client.is_none() && !cfg.openapi.on_bot_added);
        let creds = ["--app-id", "cli_1", "--app-secret", "s"];
        let cfg = validate_args(&creds).unwrap();
        assert!(cfg.openapi.on_bot_added);
        let client = cfg.openapi.client.unwrap();
        assert_eq!(client.base, "https://open.feishu.cn");
        assert_eq!(client.rate_per_sec, 10);
        let mut off = creds.to_vec();
        off.extend(["--snapshots", "off"]);
        let cfg = validate_args(&off).unwrap();
        assert!(!cfg.openapi.on_bot_added && cfg.openapi.client.is_some());

        let err = validate_args(&["--snapshots", "on", "--app-id", "cli_1"]).unwrap_err();
        assert_eq!(err.setting, "BRIDGE_SNAPSHOTS");
        let text = err.to_string();
        assert!(text.contains("FEISHU_APP_ID") && text.contains("FEISHU_APP_SECRET"));
        // A Secret without app-secret: snapshots off, start-up as before.
        let cfg = validate_args(&[
            "--app-id",
            "cli_1",
            "--app-secret-file",
            "/nonexistent/app-secret",
        ])
        .unwrap();
        assert!(cfg.openapi.client.is_none());
        let err = validate_args(&["--api-rate-per-sec", "0"]).unwrap_err();
        assert_eq!(err.setting, "FEISHU_API_RATE_PER_SEC");
    }
}
