//! Command-line flags and environment variables.
//!
//! Every setting is a flag with an environment equivalent; the environment
//! names are a public contract (see README.md). Secrets may also be read from
//! files so that Kubernetes Secret volumes can be mounted instead of exposing
//! them through the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Properties the bridge owns because its guarantees depend on them.
/// Passing any of them through `KAFKA_PROPERTIES` is a start-up error.
const MANAGED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
    "transactional.id",
];

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
    /// run the bridge against it, push the seed's sample event and print the
    /// record a consumer read back. Keeps serving until interrupted.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
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

/// Where events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngressMode {
    /// HTTP callbacks from Feishu to `BRIDGE_EVENT_PATH`.
    Webhook,
    /// The bridge dials Feishu's WebSocket; no public endpoint needed.
    LongConnection,
    /// Both at once, into the same deduplication and topic.
    Both,
}

impl IngressMode {
    pub fn webhook(self) -> bool {
        matches!(self, IngressMode::Webhook | IngressMode::Both)
    }
    pub fn long_connection(self) -> bool {
        matches!(self, IngressMode::LongConnection | IngressMode::Both)
    }
}

/// Feishu's open platform; the long connection's endpoint is found there.
pub const FEISHU_DOMAIN: &str = "https://open.feishu.cn";
/// Lark's (international) open platform.
pub const LARK_DOMAIN: &str = "https://open.larksuite.com";

#[derive(Debug, Args)]
pub struct Settings {
    /// Address of the callback endpoint (BRIDGE_EVENT_PATH, nothing else);
    /// bound only when the webhook ingress is on.
    #[arg(long, env = "BRIDGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the operator endpoints: /metrics, /readyz and /healthz.
    /// Kept off the callback port so that an ingress routing the callback
    /// host does not publish them.
    #[arg(long, env = "BRIDGE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Where events come from: `webhook` (Feishu posts to BRIDGE_EVENT_PATH),
    /// `long-connection` (the bridge dials Feishu's WebSocket), or `both`.
    #[arg(long, env = "BRIDGE_INGRESS", value_enum, default_value_t = IngressMode::Webhook)]
    pub ingress: IngressMode,

    /// App ID of the self-built app (long connection).
    #[arg(long, env = "FEISHU_APP_ID")]
    pub app_id: Option<String>,

    /// App Secret of the app (long connection).
    #[arg(long, env = "FEISHU_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<Secret>,

    /// File holding the App Secret (trailing newline ignored).
    #[arg(long, env = "FEISHU_APP_SECRET_FILE", conflicts_with = "app_secret")]
    pub app_secret_file: Option<PathBuf>,

    /// Open platform for the long connection: `feishu`, `lark`, or a base
    /// URL (a proxy, or a stand-in for tests).
    #[arg(long, env = "FEISHU_DOMAIN", default_value = "feishu")]
    pub domain: String,

    /// Long connection: after a ping, how long to wait for any frame before
    /// the connection is declared dead and re-established, in ms.
    #[arg(long, env = "FEISHU_PONG_TIMEOUT_MS", default_value_t = 10_000)]
    pub pong_timeout_ms: u64,

    /// Long connection: how long endpoint discovery plus the WebSocket
    /// handshake may take, in ms.
    #[arg(long, env = "FEISHU_CONNECT_TIMEOUT_MS", default_value_t = 15_000)]
    pub connect_timeout_ms: u64,

    /// Path Feishu posts event callbacks to.
    #[arg(long, env = "BRIDGE_EVENT_PATH", default_value = "/webhook/event")]
    pub event_path: String,

    /// Encrypt Key from the Feishu console. Enables decryption and signature checks.
    #[arg(long, env = "FEISHU_ENCRYPT_KEY", hide_env_values = true)]
    pub encrypt_key: Option<Secret>,

    /// File holding the Encrypt Key (trailing newline ignored).
    #[arg(long, env = "FEISHU_ENCRYPT_KEY_FILE", conflicts_with = "encrypt_key")]
    pub encrypt_key_file: Option<PathBuf>,

    /// Verification Token from the Feishu console. Checked on every request.
    #[arg(long, env = "FEISHU_VERIFICATION_TOKEN", hide_env_values = true)]
    pub verification_token: Option<Secret>,

    /// File holding the Verification Token (trailing newline ignored).
    #[arg(
        long,
        env = "FEISHU_VERIFICATION_TOKEN_FILE",
        conflicts_with = "verification_token"
    )]
    pub verification_token_file: Option<PathBuf>,

    /// Kafka bootstrap servers, comma-separated host:port list.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,

    /// Topic the normalized withdrawal records are written to.
    #[arg(
        long,
        env = "KAFKA_TOPIC",
        default_value = "feishu.chat.member.withdrawn"
    )]
    pub topic: String,

    /// Dead-letter topic for authentic events that cannot be normalized
    /// (default: `<topic>.dlq`).
    #[arg(long, env = "KAFKA_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,

    /// Extra librdkafka properties, `key=value`, comma-separated or repeated
    /// (e.g. `security.protocol=SASL_SSL`).
    #[arg(
        long = "kafka-property",
        env = "KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,

    /// File of extra librdkafka properties, one `key=value` per line
    /// (for credentials kept in a Secret volume). `#` starts a comment.
    #[arg(long, env = "KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<PathBuf>,

    /// How long a published event_id is remembered, in seconds.
    #[arg(long, env = "BRIDGE_DEDUP_TTL_SECS", default_value_t = 8 * 3600)]
    pub dedup_ttl_secs: u64,

    /// Maximum number of event_ids remembered at once.
    #[arg(long, env = "BRIDGE_DEDUP_CAPACITY", default_value_t = 1_000_000)]
    pub dedup_capacity: u64,

    /// Share the dedup memory through Kafka: read the record and dead-letter
    /// topics back at start-up (warm start) and while running (follow), so
    /// that every replica knows every id any replica published.
    #[arg(
        long,
        env = "BRIDGE_DEDUP_FOLLOW",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dedup_follow: bool,

    /// Longest the warm start may hold readiness back once Kafka answers,
    /// in seconds; past it the replica becomes ready with what it has read.
    #[arg(
        long,
        env = "BRIDGE_DEDUP_WARM_START_BUDGET_SECS",
        default_value_t = 120
    )]
    pub dedup_warm_start_budget_secs: u64,

    /// How long a request waits for Kafka's acknowledgement before answering 503, in ms.
    #[arg(long, env = "BRIDGE_PUBLISH_DEADLINE_MS", default_value_t = 2500)]
    pub publish_deadline_ms: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BRIDGE_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// How long a client may take to send its request body, in ms.
    #[arg(long, env = "BRIDGE_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// Accepted clock skew of X-Lark-Request-Timestamp, in seconds (0 disables the check).
    #[arg(long, env = "BRIDGE_TIMESTAMP_WINDOW_SECS", default_value_t = 300)]
    pub timestamp_window_secs: u64,

    /// How long a client may take to send a request's line and headers, and
    /// how long an idle keep-alive connection is kept, in ms.
    #[arg(long, env = "BRIDGE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Most client connections served at once; more wait in the listen backlog.
    #[arg(long, env = "BRIDGE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// How often readiness asks Kafka for the topic's metadata, in ms.
    #[arg(long, env = "BRIDGE_READINESS_INTERVAL_MS", default_value_t = 2000)]
    pub readiness_interval_ms: u64,

    /// On shutdown, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "BRIDGE_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub drain_timeout_secs: u64,

    /// On shutdown, how long the producer may take to flush, in seconds.
    #[arg(long, env = "BRIDGE_FLUSH_TIMEOUT_SECS", default_value_t = 10)]
    pub flush_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax (e.g. `info`, `feishu_kafka_bridge=debug`).
    #[arg(long, env = "BRIDGE_LOG", default_value = "info")]
    pub log_filter: String,
}

/// A string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
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

/// What the long connection needs.
#[derive(Debug, Clone)]
pub struct LongConnectionConfig {
    pub app_id: String,
    pub app_secret: Secret,
    /// Base URL of the open platform, without a trailing slash.
    pub domain: String,
    pub pong_timeout: Duration,
    pub connect_timeout: Duration,
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
    pub event_path: String,
    pub encrypt_key: Option<Secret>,
    pub verification_token: Option<Secret>,
    pub brokers: String,
    pub topic: String,
    pub dlq_topic: String,
    pub kafka_properties: Vec<(String, Secret)>,
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
        // Each ingress reads only its own secrets, so that one Secret with
        // every key (some empty) serves all modes.
        let (encrypt_key, verification_token) = if self.ingress.webhook() {
            (
                secret(
                    &self.encrypt_key,
                    &self.encrypt_key_file,
                    "FEISHU_ENCRYPT_KEY",
                    "FEISHU_ENCRYPT_KEY_FILE",
                )?,
                secret(
                    &self.verification_token,
                    &self.verification_token_file,
                    "FEISHU_VERIFICATION_TOKEN",
                    "FEISHU_VERIFICATION_TOKEN_FILE",
                )?,
            )
        } else {
            (None, None)
        };

        if !self.event_path.starts_with('/') || self.event_path.len() < 2 {
            return Err(invalid(
                "BRIDGE_EVENT_PATH",
                format!(
                    "must be an absolute path like /webhook/event, got {:?}",
                    self.event_path
                ),
            ));
        }
        if self.ingress.webhook() && same_port(self.listen, self.admin_listen) {
            return Err(invalid(
                "BRIDGE_ADMIN_LISTEN",
                format!(
                    "{} overlaps BRIDGE_LISTEN {}: the operator endpoints need their own port",
                    self.admin_listen, self.listen
                ),
            ));
        }

        let brokers = required(
            &self.brokers,
            "KAFKA_BROKERS",
            "is required (comma-separated host:port list)",
        )?;
        validate_topic("KAFKA_TOPIC", &self.topic)?;
        let dlq_topic = self
            .dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic));
        validate_topic("KAFKA_DLQ_TOPIC", &dlq_topic)?;
        if dlq_topic == self.topic {
            return Err(invalid("KAFKA_DLQ_TOPIC", "must differ from KAFKA_TOPIC"));
        }

        let mut kafka_properties = Vec::new();
        for item in &self.kafka_properties {
            if item.trim().is_empty() {
                continue;
            }
            kafka_properties.push(parse_property("KAFKA_PROPERTIES", item)?);
        }
        if let Some(path) = &self.kafka_properties_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "KAFKA_PROPERTIES_FILE",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                kafka_properties.push(parse_property("KAFKA_PROPERTIES_FILE", line)?);
            }
        }

        let long_connection = if self.ingress.long_connection() {
            Some(self.long_connection()?)
        } else {
            None
        };

        positive("BRIDGE_DEDUP_TTL_SECS", self.dedup_ttl_secs)?;
        positive("BRIDGE_DEDUP_CAPACITY", self.dedup_capacity)?;
        positive(
            "BRIDGE_DEDUP_WARM_START_BUDGET_SECS",
            self.dedup_warm_start_budget_secs,
        )?;
        positive("BRIDGE_PUBLISH_DEADLINE_MS", self.publish_deadline_ms)?;
        positive("BRIDGE_BODY_LIMIT_BYTES", self.body_limit_bytes as u64)?;
        positive("BRIDGE_BODY_TIMEOUT_MS", self.body_timeout_ms)?;
        positive("BRIDGE_READINESS_INTERVAL_MS", self.readiness_interval_ms)?;
        positive("BRIDGE_HEADER_TIMEOUT_MS", self.header_timeout_ms)?;
        positive("BRIDGE_MAX_CONNECTIONS", self.max_connections as u64)?;

        Ok(Config {
            listen: self.listen,
            admin_listen: self.admin_listen,
            ingress: self.ingress,
            long_connection,
            event_path: self.event_path.clone(),
            encrypt_key,
            verification_token,
            brokers,
            topic: self.topic.clone(),
            dlq_topic,
            kafka_properties,
            dedup_ttl: Duration::from_secs(self.dedup_ttl_secs),
            dedup_capacity: self.dedup_capacity,
            dedup_follow: self.dedup_follow,
            dedup_warm_start_budget: Duration::from_secs(self.dedup_warm_start_budget_secs),
            publish_deadline: Duration::from_millis(self.publish_deadline_ms),
            body_limit_bytes: self.body_limit_bytes,
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            max_connections: self.max_connections,
            timestamp_window: (self.timestamp_window_secs > 0)
                .then(|| Duration::from_secs(self.timestamp_window_secs)),
            readiness_interval: Duration::from_millis(self.readiness_interval_ms),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            flush_timeout: Duration::from_secs(self.flush_timeout_secs),
        })
    }
}

impl Settings {
    fn long_connection(&self) -> Result<LongConnectionConfig, ConfigError> {
        let app_id = required(
            &self.app_id,
            "FEISHU_APP_ID",
            "is required with BRIDGE_INGRESS=long-connection or both",
        )?;
        let app_secret = secret(
            &self.app_secret,
            &self.app_secret_file,
            "FEISHU_APP_SECRET",
            "FEISHU_APP_SECRET_FILE",
        )?
        .ok_or_else(|| {
            invalid(
                "FEISHU_APP_SECRET",
                "is required with BRIDGE_INGRESS=long-connection or both (or FEISHU_APP_SECRET_FILE)",
            )
        })?;
        let domain = match self.domain.trim() {
            "feishu" => FEISHU_DOMAIN.to_owned(),
            "lark" => LARK_DOMAIN.to_owned(),
            url if has_host(url) => url.trim_end_matches('/').to_owned(),
            other => {
                return Err(invalid(
                    "FEISHU_DOMAIN",
                    format!("must be feishu, lark or an http(s) base URL, got {other:?}"),
                ))
            }
        };
        positive("FEISHU_PONG_TIMEOUT_MS", self.pong_timeout_ms)?;
        positive("FEISHU_CONNECT_TIMEOUT_MS", self.connect_timeout_ms)?;
        Ok(LongConnectionConfig {
            app_id,
            app_secret,
            domain,
            pong_timeout: Duration::from_millis(self.pong_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
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

fn secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    value_name: &'static str,
    file_name: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    let raw = match (value, file) {
        (Some(v), _) => v.expose().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| invalid(file_name, format!("cannot read {}: {e}", path.display())))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if raw.is_empty() {
        // An empty secret would silently switch a check off: refuse it, so
        // that "not configured" is always a deliberate absence.
        return Err(invalid(
            value_name,
            "is set but empty (unset it to disable)",
        ));
    }
    Ok(Some(Secret(raw)))
}

/// Whether two listen addresses would contend for one port (port 0 asks the
/// system for a free one, so it never does).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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

/// `http(s)://host…`: enough to catch a typo at start-up; the endpoint
/// call reports anything subtler.
fn has_host(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        r.split(['/', '?', '#'])
            .next()
            .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
    })
}

fn positive(setting: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(setting, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn validate_topic(setting: &'static str, topic: &str) -> Result<(), ConfigError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty()
        || topic.len() > 249
        || !topic.chars().all(legal)
        || topic == "."
        || topic == ".."
    {
        return Err(invalid(
            setting,
            format!("{topic:?} is not a legal Kafka topic name ([a-zA-Z0-9._-], 1 to 249 chars)"),
        ));
    }
    Ok(())
}

fn parse_property(setting: &'static str, item: &str) -> Result<(String, Secret), ConfigError> {
    let Some((key, value)) = item.split_once('=') else {
        return Err(invalid(
            setting,
            format!(
                "expected key=value, got an entry without '=' (key {:?})",
                item.trim()
            ),
        ));
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(invalid(setting, "entry with an empty key"));
    }
    if MANAGED_KAFKA_PROPERTIES.contains(&key.as_str()) {
        return Err(invalid(
            setting,
            format!(
                "{key} is managed by the bridge (brokers come from KAFKA_BROKERS; \
                 idempotence, acks=all and the murmur2_random partitioner are required \
                 for its delivery and ordering guarantees)"
            ),
        ));
    }
    Ok((key, Secret(value.trim().to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["feishu-kafka-bridge"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parse").settings
    }

    #[test]
    fn defaults_need_only_brokers() {
        let cfg = settings(&["--brokers", "k:9092"])
            .validate()
            .expect("valid");
        assert_eq!(cfg.topic, "feishu.chat.member.withdrawn");
        assert_eq!(cfg.dlq_topic, "feishu.chat.member.withdrawn.dlq");
        assert_eq!(cfg.event_path, "/webhook/event");
        assert_eq!(cfg.publish_deadline, Duration::from_millis(2500));
        assert_eq!(cfg.timestamp_window, Some(Duration::from_secs(300)));
        assert_eq!(cfg.dedup_capacity, 1_000_000);
        assert_eq!(cfg.dedup_ttl, Duration::from_secs(8 * 3600));
        assert!(cfg.dedup_follow);
        assert_eq!(cfg.dedup_warm_start_budget, Duration::from_secs(120));
    }

    #[test]
    fn dedup_follow_takes_a_boolean_and_the_budget_must_be_positive() {
        for (v, want) in [("false", false), ("0", false), ("true", true), ("on", true)] {
            let cfg = settings(&["--brokers", "k:1", &format!("--dedup-follow={v}")])
                .validate()
                .expect("valid");
            assert_eq!(cfg.dedup_follow, want, "{v}");
        }
        let argv = [
            "feishu-kafka-bridge",
            "--brokers",
            "k:1",
            "--dedup-follow=maybe",
        ];
        assert!(Cli::try_parse_from(argv).is_err());
        let err = settings(&["--brokers", "k:1", "--dedup-warm-start-budget-secs", "0"])
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "BRIDGE_DEDUP_WARM_START_BUDGET_SECS");
    }

    #[test]
    fn the_admin_listener_has_its_own_port() {
        let cfg = settings(&["--brokers", "k:1"]).validate().expect("valid");
        assert_eq!(cfg.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cfg.admin_listen, "0.0.0.0:9090".parse().unwrap());
        for admin in ["0.0.0.0:8080", "127.0.0.1:8080"] {
            let err = settings(&["--brokers", "k:1", "--admin-listen", admin])
                .validate()
                .unwrap_err();
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
            let mut argv = vec!["--brokers", "k:1"];
            argv.extend_from_slice(args);
            settings(&argv).validate().expect("valid");
        }
    }

    #[test]
    fn missing_brokers_names_the_setting() {
        let err = settings(&[]).validate().unwrap_err();
        assert_eq!(err.setting, "KAFKA_BROKERS");
    }

    #[test]
    fn managed_properties_are_refused() {
        let err = settings(&["--brokers", "k:1", "--kafka-property", "acks=1"])
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "KAFKA_PROPERTIES");
        assert!(err.to_string().contains("acks"));
        let ok = settings(&[
            "--brokers",
            "k:1",
            "--kafka-property",
            "security.protocol=SASL_SSL",
        ])
        .validate()
        .expect("valid");
        assert_eq!(ok.kafka_properties[0].0, "security.protocol");
    }

    #[test]
    fn secrets_from_files_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("fkb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "s3cret-key\n").unwrap();
        let cfg = settings(&[
            "--brokers",
            "k:1",
            "--encrypt-key-file",
            path.to_str().unwrap(),
        ])
        .validate()
        .expect("valid");
        assert_eq!(cfg.encrypt_key.as_ref().unwrap().expose(), "s3cret-key");
        assert!(!format!("{cfg:?}").contains("s3cret"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn empty_secret_and_bad_topic_are_errors() {
        let err = settings(&["--brokers", "k:1", "--encrypt-key", ""])
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "FEISHU_ENCRYPT_KEY");
        let err = settings(&["--brokers", "k:1", "--topic", "bad topic"])
            .validate()
            .unwrap_err();
        assert_eq!(err.setting, "KAFKA_TOPIC");
    }

    #[test]
    fn long_connection_needs_credentials_and_a_known_domain() {
        use clap::{CommandFactory, FromArgMatches};
        let parse = |args: &[&str]| {
            let mut all = vec!["feishu-kafka-bridge", "--brokers", "k:9092"];
            all.extend_from_slice(args);
            let command = Cli::command().mut_args(|a| a.env(None::<&'static str>));
            let m = command.try_get_matches_from(all).expect("parses");
            Cli::from_arg_matches(&m)
                .expect("parses")
                .settings
                .validate()
        };
        let err = parse(&["--ingress", "long-connection"]).unwrap_err();
        assert_eq!(err.setting, "FEISHU_APP_ID");
        let err = parse(&["--ingress", "both", "--app-id", "cli_1"]).unwrap_err();
        assert_eq!(err.setting, "FEISHU_APP_SECRET");
        let long_connection_with = |extra: &[&'static str]| {
            let mut args = vec![
                "--ingress",
                "long-connection",
                "--app-id",
                "cli_1",
                "--app-secret",
                "s",
            ];
            args.extend_from_slice(extra);
            parse(&args)
        };
        let with_domain = |domain: &'static str| long_connection_with(&["--domain", domain]);
        assert_eq!(with_domain("larkk").unwrap_err().setting, "FEISHU_DOMAIN");
        assert_eq!(
            with_domain("https:///x").unwrap_err().setting,
            "FEISHU_DOMAIN"
        );
        let lc = with_domain("lark")
            .unwrap()
            .long_connection
            .expect("configured");
        assert_eq!(lc.domain, LARK_DOMAIN);
        assert_eq!(lc.app_secret.expose(), "s");
        let lc = with_domain("http://127.0.0.1:9/")
            .unwrap()
            .long_connection
            .unwrap();
        assert_eq!(lc.domain, "http://127.0.0.1:9");
        // The webhook's secrets are not read in long-connection-only mode
        // (an empty one would otherwise stop start-up).
        let lc = long_connection_with(&["--encrypt-key", ""]).unwrap();
        assert!(lc.encrypt_key.is_none());
        assert!(parse(&["--encrypt-key", ""]).is_err());
        // Webhook only: no credentials needed, none kept.
        assert!(parse(&[]).unwrap().long_connection.is_none());
    }
}
