//! Command-line flags and environment variables.
//!
//! Every setting is a flag with an environment equivalent; the environment
//! names are a public contract (docs/configuration.md). Secrets may also be read from
//! files so that Kubernetes Secret volumes can be mounted instead of exposing
//! them through the process environment.
//!
//! The settings are grouped by concern, each group with its flags and its
//! checks in a module of its own: the service itself (`server`), Feishu
//! (`feishu`), Kafka (`kafka`), deduplication (`dedup`) and which events go
//! where (`routing`). This module puts them together into a [`Config`].

pub mod apps;
mod dedup;
mod feishu;
mod kafka;
mod openapi;
mod routing;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::secret::Secret;
pub use dedup::DedupArgs;
pub use feishu::{
    FeishuArgs, IngressMode, ListedLongConnection, LongConnectionConfig, WebhookSecretSources,
    WebhookSecrets, FEISHU_DOMAIN, LARK_DOMAIN,
};
pub use kafka::KafkaArgs;
pub use openapi::{OpenApiArgs, OpenApiSettings, SnapshotMode};
pub use routing::RoutingArgs;
pub use server::ServerArgs;

use crate::routing::Routing;

#[derive(Debug, Parser)]
#[command(name = "feishu-kafka-bridge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge (the default when no subcommand is given).
    Serve,
    /// Start an embedded Kafka-protocol broker (librdkafka's mock cluster),
    /// run the bridge against it, push sample events and print the records
    /// a consumer read back. Keeps serving until interrupted.
    Demo(DemoArgs),
    /// List the members of every chat the app's bot is in (or of the chats
    /// given with --chat) through Feishu's OpenAPI, publish each chat's
    /// snapshot on the member topic, print a summary and exit (non-zero when
    /// any chat failed). Uses the same settings as the service.
    Snapshot(SnapshotArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Only this chat (repeatable); default: every chat the bot is in.
    #[arg(long = "chat", value_name = "CHAT_ID")]
    pub chats: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address the demo's bridge takes callbacks on.
    #[arg(long = "demo-listen", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the demo bridge's /metrics, /readyz and /healthz.
    #[arg(long = "demo-admin-listen", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, as given: flags and environment, grouped by concern.
#[derive(Debug, Args)]
pub struct Settings {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub feishu: FeishuArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    #[command(flatten)]
    pub dedup: DedupArgs,
    #[command(flatten)]
    pub openapi: OpenApiArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format.
    #[arg(long = "log-format", env = "BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub format: LogFormat,

    /// Log filter in `tracing` syntax (e.g. `info`, `feishu_kafka_bridge=debug`).
    #[arg(long = "log-filter", env = "BRIDGE_LOG", default_value = "info")]
    pub filter: String,
}

/// A start-up error: names the setting and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

/// Settings after validation: everything the service needs, nothing optional
/// that it cannot do without.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub ingress: IngressMode,
    /// Present exactly when `ingress` includes the long connection.
    pub long_connection: Option<LongConnectionConfig>,
    /// The listed apps' own long connections, whatever `ingress` says.
    pub listed_long_connections: Vec<ListedLongConnection>,
    pub event_path: String,
    pub encrypt_key: Option<Secret>,
    pub verification_token: Option<Secret>,
    /// Still accepted during a rotation; only next to `encrypt_key`.
    pub encrypt_key_previous: Option<Secret>,
    /// Still accepted during a rotation; only next to `verification_token`.
    pub verification_token_previous: Option<Secret>,
    /// Where those four come from, to read them again (`crate::reload`).
    pub secret_sources: WebhookSecretSources,
    /// How often secret files are read again; `None` never.
    pub secret_reload_interval: Option<Duration>,
    /// `BRIDGE_APPS_FILE`: the listed apps, each on `<event_path>/<name>`.
    pub apps: apps::Apps,
    pub apps_file: Option<std::path::PathBuf>,
    /// Whether `event_path` itself is served (the single app's secrets, or
    /// no list at all).
    pub serve_single_app: bool,
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    /// `BRIDGE_INTERNAL_TOPIC`, present when a listed store app has its
    /// `app_secret` (its `app_ticket` is shared there).
    pub internal_topic: Option<String>,
    pub kafka_properties: Vec<(String, Secret)>,
    /// `KAFKA_PROPERTIES_FILE` named a file that does not exist (logged at
    /// start-up; no properties come from it).
    pub kafka_properties_file_absent: Option<std::path::PathBuf>,
    /// Which event types are published, how, and where.
    pub routing: Routing,
    /// Feishu's OpenAPI (membership snapshots).
    pub openapi: OpenApiSettings,
    pub dedup_ttl: Duration,
    pub dedup_capacity: u64,
    /// Read the topics back into the dedup memory (warm start + follow).
    pub dedup_follow: bool,
    pub dedup_warm_start_budget: Duration,
    pub publish_deadline: Duration,
    pub body_limit_bytes: usize,
    pub body_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// `None` disables the timestamp check.
    pub timestamp_window: Option<Duration>,
    pub readiness_interval: Duration,
    pub drain_timeout: Duration,
    pub flush_timeout: Duration,
}

impl Settings {
    /// Validates the raw settings; the error names the first bad setting.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let secrets = self.feishu.webhook_secrets()?;
        let apps = apps::from_args(&self.feishu)?;
        // With a list, the bare path is served only for a single app that
        // has secrets: without any, it would take anyone's events.
        let serve_single_app = apps.0.is_empty()
            || secrets.encrypt_key.is_some()
            || secrets.verification_token.is_some();
        let (server, ingress) = (&self.server, self.feishu.ingress);
        server.validate(ingress)?;
        let kafka = self.kafka.validate()?;
        let routing = self.routing.validate(&kafka)?;
        let long_connection = self.feishu.long_connection()?;
        let listed_long_connections = apps
            .long_connections()
            .map(|app| {
                // The list's checks made sure it is there.
                let secret = app.app_secret.clone().ok_or_else(|| {
                    invalid(
                        apps::SETTING,
                        format!("{}: the long connection needs app_secret", app.name),
                    )
                })?;
                Ok(ListedLongConnection {
                    name: app.name.clone(),
                    config: self.feishu.long_connection_of(app.app_id.clone(), secret)?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut openapi = self.openapi.validate(&self.feishu)?;
        // A listed app with its app_secret is snapshotted as the single app is.
        openapi.on_bot_added |= self.openapi.snapshots != SnapshotMode::Off
            && apps.0.iter().any(|a| a.app_secret.is_some());
        self.dedup.validate()?;
        let internal_topic = apps
            .0
            .iter()
            .any(|a| a.kind == apps::AppKind::Store && a.app_secret.is_some())
            .then(|| kafka.internal_topic.clone());
        if internal_topic.is_some() && routing.raw_topic() == internal_topic.as_deref() {
            return Err(invalid(
                "BRIDGE_INTERNAL_TOPIC",
                "must differ from BRIDGE_RAW_TOPIC (it holds credentials that consumers must not read)",
            ));
        }

        Ok(Config {
            listen: server.listen,
            admin_listen: server.admin_listen,
            ingress,
            long_connection,
            listed_long_connections,
            event_path: server.event_path.clone(),
            encrypt_key: secrets.encrypt_key,
            verification_token: secrets.verification_token,
            encrypt_key_previous: secrets.encrypt_key_previous,
            verification_token_previous: secrets.verification_token_previous,
            secret_sources: self.feishu.webhook_secret_sources(),
            apps,
            apps_file: self.feishu.apps_file.clone(),
            serve_single_app,
            secret_reload_interval: self.feishu.secret_reload_interval(),
            brokers: kafka.brokers,
            topic: kafka.topic,
            dlq_topic: kafka.dlq_topic,
            internal_topic,
            kafka_properties: kafka.properties,
            kafka_properties_file_absent: kafka.properties_file_absent,
            routing,
            openapi,
            dedup_ttl: Duration::from_secs(self.dedup.dedup_ttl_secs),
            dedup_capacity: self.dedup.dedup_capacity,
            dedup_follow: self.dedup.dedup_follow,
            dedup_warm_start_budget: Duration::from_secs(self.dedup.dedup_warm_start_budget_secs),
            publish_deadline: Duration::from_millis(server.publish_deadline_ms),
            body_limit_bytes: server.body_limit_bytes,
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            max_connections: server.max_connections,
            timestamp_window: self.feishu.timestamp_window(),
            readiness_interval: Duration::from_millis(server.readiness_interval_ms),
            drain_timeout: Duration::from_secs(server.drain_timeout_secs),
            flush_timeout: Duration::from_secs(server.flush_timeout_secs),
        })
    }
}

impl Config {
    /// The documented defaults with the given brokers, for the demo and for
    /// tests that run the bridge in-process. Flags' defaults are the single
    /// source; the process environment is not consulted.
    pub fn with_defaults(brokers: &str) -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|a| a.env(None::<&'static str>));
        let parsed = command
            .try_get_matches_from(["feishu-kafka-bridge", "--brokers", brokers])
            .and_then(|m| Cli::from_arg_matches(&m));
        match parsed.map(|cli| cli.settings.validate()) {
            Ok(Ok(config)) => config,
            Ok(Err(e)) => unreachable!("built-in defaults validate: {e}"),
            Err(e) => unreachable!("built-in defaults parse: {e}"),
        }
    }
}

/// A setting that must be present and not blank, trimmed.
fn required(
    value: &Option<String>,
    setting: &'static str,
    reason: &'static str,
) -> Result<String, ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(invalid(setting, reason)),
    }
}

fn positive(setting: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(setting, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Parses flags as the binary would, without the process environment.
#[cfg(test)]
pub(crate) fn parse_args(args: &[&str]) -> Result<Settings, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut argv = vec!["feishu-kafka-bridge"];
    argv.extend_from_slice(args);
    let command = Cli::command().mut_args(|a| a.env(None::<&'static str>));
    let m = command.try_get_matches_from(argv)?;
    Ok(Cli::from_arg_matches(&m)?.settings)
}

/// [`parse_args`] then [`Settings::validate`], with `--brokers k:9092` first.
#[cfg(test)]
pub(crate) fn validate_args(args: &[&str]) -> Result<Config, ConfigError> {
    let mut all = vec!["--brokers", "k:9092"];
    all.extend_from_slice(args);
    parse_args(&all).expect("parses").validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_brokers() {
        let cfg = validate_args(&[]).expect("valid");
        assert_eq!(cfg.topic, "feishu.chat.members");
        assert_eq!(cfg.dlq_topic, "feishu.chat.members.dlq");
        assert_eq!(cfg.event_path, "/webhook/event");
        assert_eq!(cfg.publish_deadline, Duration::from_millis(2500));
        assert_eq!(cfg.timestamp_window, Some(Duration::from_secs(300)));
        assert_eq!(cfg.dedup_capacity, 1_000_000);
        assert_eq!(cfg.dedup_ttl, Duration::from_secs(8 * 3600));
        assert!(cfg.dedup_follow);
        assert_eq!(cfg.dedup_warm_start_budget, Duration::from_secs(120));
        assert_eq!(cfg.routing, Routing::every_member_type());
        let err = parse_args(&[]).unwrap().validate().unwrap_err();
        assert_eq!(err.setting, "KAFKA_BROKERS");
    }

    #[test]
    fn every_flag_has_its_documented_environment_name() {
        use clap::CommandFactory;
        let names: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for name in [
            "BRIDGE_LISTEN",
            "BRIDGE_INGRESS",
            "FEISHU_ENCRYPT_KEY",
            "KAFKA_TOPIC",
            "BRIDGE_EVENT_TYPES",
            "BRIDGE_RAW_EVENT_TYPES",
            "BRIDGE_RAW_TOPIC",
            "BRIDGE_DEDUP_FOLLOW",
            "BRIDGE_LOG",
            "FEISHU_ENCRYPT_KEY_PREVIOUS",
            "FEISHU_VERIFICATION_TOKEN_PREVIOUS_FILE",
            "BRIDGE_SNAPSHOTS",
            "FEISHU_API_RATE_PER_SEC",
            "FEISHU_API_TIMEOUT_MS",
            "BRIDGE_INTERNAL_TOPIC",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
    }

    #[test]
    fn a_listed_app_on_its_own_long_connection_gets_the_processs_domain_and_timeouts() {
        let path = std::env::temp_dir().join(format!("fkb-config-lc-{}.json", std::process::id()));
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        write(
            r#"{"apps":[{"name":"it","app_id":"cli_it","ingress":"long_connection","app_secret":"s"}]}"#,
        );
        let cfg = validate_args(&[
            "--apps-file",
            file,
            "--domain",
            "lark",
            "--pong-timeout-ms",
            "3000",
        ])
        .unwrap();
        assert!(cfg.long_connection.is_none(), "the single app's stays off");
        let [listed] = &cfg.listed_long_connections[..] else {
            panic!("{:?}", cfg.listed_long_connections)
        };
        assert_eq!(
            (
                listed.name.as_str(),
                listed.config.app_id.as_str(),
                listed.config.domain.as_str()
            ),
            ("it", "cli_it", LARK_DOMAIN)
        );
        assert_eq!(listed.config.pong_timeout, Duration::from_secs(3));
        // A list of long connections only runs beside the single app's own.
        let single_lc = [
            "--ingress",
            "long-connection",
            "--app-id",
            "cli_1",
            "--app-secret",
            "x",
        ];
        let lc_only = [&["--apps-file", file][..], &single_lc[..]].concat();
        assert_eq!(
            validate_args(&lc_only)
                .unwrap()
                .listed_long_connections
                .len(),
            1
        );
        // A callback app needs the callback port.
        write(r#"{"apps":[{"name":"hr","app_id":"cli_hr","encrypt_key":"k"}]}"#);
        let err = validate_args(&lc_only).unwrap_err();
        assert_eq!(err.setting, "BRIDGE_APPS_FILE");
        assert!(
            err.reason
                .contains("lists hr whose callbacks need BRIDGE_INGRESS=webhook"),
            "{err}"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_store_app_with_its_secret_needs_an_internal_topic_of_its_own() {
        let path =
            std::env::temp_dir().join(format!("fkb-config-store-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"apps":[{"name":"shop","app_id":"cli_s","kind":"store","encrypt_key":"k","app_secret":"s"}]}"#,
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cfg = validate_args(&["--apps-file", file]).unwrap();
        assert_eq!(
            cfg.internal_topic.as_deref(),
            Some("feishu.bridge.internal")
        );
        assert!(
            cfg.openapi.on_bot_added,
            "a listed app's secret turns snapshots on"
        );
        let err = validate_args(&[
            "--apps-file",
            file,
            "--internal-topic",
            "feishu.chat.members",
        ])
        .unwrap_err();
        assert_eq!(err.setting, "BRIDGE_INTERNAL_TOPIC");
        let err = validate_args(&[
            "--apps-file",
            file,
            "--internal-topic",
            "t",
            "--raw-event-types",
            "*",
            "--raw-topic",
            "t",
        ])
        .unwrap_err();
        assert_eq!(err.setting, "BRIDGE_INTERNAL_TOPIC");
        // Without a store app's secret there is nothing to share.
        assert!(validate_args(&[]).unwrap().internal_topic.is_none());
        let _ = std::fs::remove_file(&path);
    }
}
