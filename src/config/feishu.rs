//! The Feishu side: which ingress, and the credentials and limits of each
//! (the callback's encrypt key, token and timestamp window; the long
//! connection's app, domain and timeouts).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{invalid, positive, required, ConfigError};
use crate::secret::Secret;

/// Feishu's open platform; the long connection's endpoint is found there.
pub const FEISHU_DOMAIN: &str = "https://open.feishu.cn";
/// Lark's (international) open platform.
pub const LARK_DOMAIN: &str = "https://open.larksuite.com";

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

#[derive(Debug, Args)]
#[command(next_help_heading = "Feishu")]
pub struct FeishuArgs {
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

    /// The Encrypt Key being rotated out: still accepted (signature and
    /// decryption) next to FEISHU_ENCRYPT_KEY. Empty means none.
    #[arg(long, env = "FEISHU_ENCRYPT_KEY_PREVIOUS", hide_env_values = true)]
    pub encrypt_key_previous: Option<Secret>,

    /// File holding the previous Encrypt Key; a missing or empty file means none.
    #[arg(
        long,
        env = "FEISHU_ENCRYPT_KEY_PREVIOUS_FILE",
        conflicts_with = "encrypt_key_previous"
    )]
    pub encrypt_key_previous_file: Option<PathBuf>,

    /// The Verification Token being rotated out: still accepted next to
    /// FEISHU_VERIFICATION_TOKEN. Empty means none.
    #[arg(
        long,
        env = "FEISHU_VERIFICATION_TOKEN_PREVIOUS",
        hide_env_values = true
    )]
    pub verification_token_previous: Option<Secret>,

    /// File holding the previous Verification Token; a missing or empty file means none.
    #[arg(
        long,
        env = "FEISHU_VERIFICATION_TOKEN_PREVIOUS_FILE",
        conflicts_with = "verification_token_previous"
    )]
    pub verification_token_previous_file: Option<PathBuf>,

    /// Several apps: a JSON file listing each app's name, App ID, kind and
    /// secrets; each app's callbacks on `<BRIDGE_EVENT_PATH>/<name>`.
    #[arg(long, env = "BRIDGE_APPS_FILE")]
    pub apps_file: Option<PathBuf>,

    /// How often the callback's secret files (the `_FILE` settings) are
    /// read again, in ms: a changed file is applied without a restart, a
    /// file that cannot be used keeps the running secrets. 0: never.
    #[arg(
        long,
        env = "FEISHU_SECRET_RELOAD_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub secret_reload_interval_ms: u64,

    /// Accepted clock skew of X-Lark-Request-Timestamp, in seconds (0 disables the check).
    #[arg(long, env = "BRIDGE_TIMESTAMP_WINDOW_SECS", default_value_t = 300)]
    pub timestamp_window_secs: u64,
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

/// A listed app's long connection (`"ingress": "long_connection"` in
/// `BRIDGE_APPS_FILE`).
#[derive(Debug, Clone)]
pub struct ListedLongConnection {
    /// The app's name in the list: its label in logs, metrics and readiness.
    pub name: String,
    pub config: LongConnectionConfig,
}

/// The callback's secrets: the encrypt key and the verification token, each
/// with the value being rotated out, if any (only next to a current one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookSecrets {
    pub encrypt_key: Option<Secret>,
    pub verification_token: Option<Secret>,
    pub encrypt_key_previous: Option<Secret>,
    pub verification_token_previous: Option<Secret>,
}

/// One secret setting: its value, or the file that holds it.
#[derive(Debug, Clone, Default)]
struct Source {
    value: Option<Secret>,
    file: Option<PathBuf>,
}

/// Where the callback's secrets come from, kept so that they can be read
/// again while the bridge runs (`crate::reload`): a value given in a file
/// may change, one given directly may not.
#[derive(Debug, Clone, Default)]
pub struct WebhookSecretSources {
    webhook: bool,
    encrypt_key: Source,
    verification_token: Source,
    encrypt_key_previous: Source,
    verification_token_previous: Source,
}

impl WebhookSecretSources {
    /// Whether any of the callback's secrets is read from a file.
    pub fn has_files(&self) -> bool {
        self.webhook
            && [
                &self.encrypt_key,
                &self.verification_token,
                &self.encrypt_key_previous,
                &self.verification_token_previous,
            ]
            .iter()
            .any(|s| s.value.is_none() && s.file.is_some())
    }

    /// Reads the secrets, with the checks of start-up (an empty current
    /// value, a previous one without a current one, an unreadable file are
    /// errors naming the setting).
    pub fn read(&self) -> Result<WebhookSecrets, ConfigError> {
        if !self.webhook {
            return Ok(WebhookSecrets::default());
        }
        let encrypt_key = secret(
            &self.encrypt_key.value,
            &self.encrypt_key.file,
            "FEISHU_ENCRYPT_KEY",
            "FEISHU_ENCRYPT_KEY_FILE",
        )?;
        let verification_token = secret(
            &self.verification_token.value,
            &self.verification_token.file,
            "FEISHU_VERIFICATION_TOKEN",
            "FEISHU_VERIFICATION_TOKEN_FILE",
        )?;
        let encrypt_key_previous = previous_secret(
            &self.encrypt_key_previous.value,
            &self.encrypt_key_previous.file,
            [
                "FEISHU_ENCRYPT_KEY_PREVIOUS",
                "FEISHU_ENCRYPT_KEY_PREVIOUS_FILE",
            ],
            encrypt_key.is_some(),
            "FEISHU_ENCRYPT_KEY (or FEISHU_ENCRYPT_KEY_FILE)",
        )?;
        let verification_token_previous = previous_secret(
            &self.verification_token_previous.value,
            &self.verification_token_previous.file,
            [
                "FEISHU_VERIFICATION_TOKEN_PREVIOUS",
                "FEISHU_VERIFICATION_TOKEN_PREVIOUS_FILE",
            ],
            verification_token.is_some(),
            "FEISHU_VERIFICATION_TOKEN (or FEISHU_VERIFICATION_TOKEN_FILE)",
        )?;
        Ok(WebhookSecrets {
            encrypt_key,
            verification_token,
            encrypt_key_previous,
            verification_token_previous,
        })
    }
}

impl FeishuArgs {
    /// Where the callback's secrets come from.
    pub fn webhook_secret_sources(&self) -> WebhookSecretSources {
        let source = |value: &Option<Secret>, file: &Option<PathBuf>| Source {
            value: value.clone(),
            file: file.clone(),
        };
        WebhookSecretSources {
            webhook: self.ingress.webhook(),
            encrypt_key: source(&self.encrypt_key, &self.encrypt_key_file),
            verification_token: source(&self.verification_token, &self.verification_token_file),
            encrypt_key_previous: source(
                &self.encrypt_key_previous,
                &self.encrypt_key_previous_file,
            ),
            verification_token_previous: source(
                &self.verification_token_previous,
                &self.verification_token_previous_file,
            ),
        }
    }

    /// How often secret files are read again; `None` never.
    pub fn secret_reload_interval(&self) -> Option<Duration> {
        (self.secret_reload_interval_ms > 0)
            .then(|| Duration::from_millis(self.secret_reload_interval_ms))
    }

    /// The callback's secrets. Each ingress reads only its own, so that one
    /// Secret with every key (some empty) serves all modes.
    pub fn webhook_secrets(&self) -> Result<WebhookSecrets, ConfigError> {
        self.webhook_secret_sources().read()
    }

    /// The long connection's settings, when it is an ingress.
    pub fn long_connection(&self) -> Result<Option<LongConnectionConfig>, ConfigError> {
        if !self.ingress.long_connection() {
            return Ok(None);
        }
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
        self.long_connection_of(app_id, app_secret).map(Some)
    }

    /// A long connection for this app: the domain and timeouts are the
    /// process's (the single app's and every listed app's alike).
    pub fn long_connection_of(
        &self,
        app_id: String,
        app_secret: Secret,
    ) -> Result<LongConnectionConfig, ConfigError> {
        let domain = self.base_url()?;
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

    /// The open platform's base URL (`FEISHU_DOMAIN`), without a trailing slash.
    pub fn base_url(&self) -> Result<String, ConfigError> {
        match self.domain.trim() {
            "feishu" => Ok(FEISHU_DOMAIN.to_owned()),
            "lark" => Ok(LARK_DOMAIN.to_owned()),
            url if has_host(url) => Ok(url.trim_end_matches('/').to_owned()),
            other => Err(invalid(
                "FEISHU_DOMAIN",
                format!("must be feishu, lark or an http(s) base URL, got {other:?}"),
            )),
        }
    }

    /// The app's ID and secret when both are given: `None` when either is
    /// absent (an unset setting, an empty ID, or a secret file that does not
    /// exist, as a Secret without the `app-secret` key gives), so that a
    /// deploy that never set them starts as before. A secret file that
    /// exists but cannot be read, or is empty, is an error.
    pub fn app_credentials(&self) -> Result<Option<(String, Secret)>, ConfigError> {
        let Some(app_id) = self
            .app_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let absent_file =
            self.app_secret.is_none() && self.app_secret_file.as_ref().is_some_and(|p| !p.exists());
        if absent_file {
            return Ok(None);
        }
        let secret = secret(
            &self.app_secret,
            &self.app_secret_file,
            "FEISHU_APP_SECRET",
            "FEISHU_APP_SECRET_FILE",
        )?;
        Ok(secret.map(|s| (app_id.to_owned(), s)))
    }

    /// `None` disables the timestamp check.
    pub fn timestamp_window(&self) -> Option<Duration> {
        (self.timestamp_window_secs > 0).then(|| Duration::from_secs(self.timestamp_window_secs))
    }
}

/// A secret given by value or in a file.
pub(super) fn secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    value_name: &'static str,
    file_name: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    let raw = match (value, file) {
        (Some(v), _) => v.expose().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| invalid(file_name, unreadable(path, &e)))?
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
    Ok(Some(Secret::new(raw)))
}

/// Why a required secret's file cannot be read. A missing file in a pod is
/// almost always a Secret without that key, so the answer names the key.
fn unreadable(path: &std::path::Path, e: &std::io::Error) -> String {
    match (e.kind(), path.file_name()) {
        (std::io::ErrorKind::NotFound, Some(key)) => format!(
            "{} does not exist (in Kubernetes: the Secret has no key {:?})",
            path.display(),
            key.to_string_lossy()
        ),
        _ => format!("cannot read {}: {e}", path.display()),
    }
}

/// The value of a secret being rotated out, given by value or in a file.
///
/// Unlike a current secret, absence is the normal state, and it is spelled
/// the way Kubernetes spells it: a Secret volume is mounted whole, so a key
/// the Secret lacks is a missing file, and a rotation that is over leaves the
/// key empty. Both mean "no previous value", as does an empty value: a
/// previous value can only widen what the current one accepts, so its
/// absence switches no check off. A file that exists but cannot be read is
/// still an error.
///
/// A previous value with no current one is refused, naming the setting that
/// gave it: it would otherwise be either ignored or the only accepted value,
/// and neither is what a rotation means.
///
/// A previous value equal to the current one is accepted without a word: it
/// is the natural state between "copy the current value into the previous
/// setting" and "put the new value into the current one", and it is
/// harmless (the current value is tried first, so the previous one simply
/// never matches, which the metric shows).
fn previous_secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    [value_name, file_name]: [&'static str; 2],
    has_current: bool,
    current_names: &str,
) -> Result<Option<Secret>, ConfigError> {
    let (raw, setting) = match (value, file) {
        (Some(v), _) => (v.expose().to_owned(), value_name),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => (text.trim_end_matches(['\r', '\n']).to_owned(), file_name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(invalid(
                    file_name,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        },
        (None, None) => return Ok(None),
    };
    if raw.is_empty() {
        return Ok(None);
    }
    if !has_current {
        return Err(invalid(
            setting,
            format!(
                "is set but {current_names} is not: a previous value is only accepted next to the current one"
            ),
        ));
    }
    Ok(Some(Secret::new(raw)))
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

#[cfg(test)]
mod tests;
