//! Several apps in one deployment: `BRIDGE_APPS_FILE`, a JSON file (mounted
//! from a Secret) listing each app's name, App ID, kind and secrets. Each
//! app's callbacks arrive on a path of its own, `<BRIDGE_EVENT_PATH>/<name>`,
//! and are checked with that app's keys only: an encrypted body does not say
//! which app it is for, so the path has to.
//!
//! ```json
//! {"apps": [
//!   {"name": "hr", "app_id": "cli_a1", "encrypt_key": "…", "verification_token": "…"},
//!   {"name": "shop", "app_id": "cli_b2", "kind": "store", "encrypt_key": "…",
//!    "verification_token": "…", "encrypt_key_previous": "…"},
//!   {"name": "it", "app_id": "cli_c3", "ingress": "long_connection", "app_secret": "…"}
//! ]}
//! ```
//!
//! A self-built app may instead dial a long connection of its own
//! (`"ingress": "long_connection"`, with its `app_secret`): it then has no
//! path. The single-app settings (`FEISHU_ENCRYPT_KEY`, …) keep serving
//! `BRIDGE_EVENT_PATH` itself, with or without a list.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::feishu::{FeishuArgs, WebhookSecrets};
use super::{invalid, ConfigError};
use crate::secret::Secret;

pub const SETTING: &str = "BRIDGE_APPS_FILE";

/// Self-built (企业自建应用) or store (应用商店应用).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    #[default]
    SelfBuilt,
    Store,
}

/// Where an app's events come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppIngress {
    #[default]
    Callback,
    LongConnection,
}

/// One app of the list, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    app_id: String,
    #[serde(default)]
    kind: AppKind,
    #[serde(default)]
    ingress: AppIngress,
    encrypt_key: Option<String>,
    verification_token: Option<String>,
    encrypt_key_previous: Option<String>,
    verification_token_previous: Option<String>,
    /// For the OpenAPI (snapshots); not used by the callbacks.
    app_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    apps: Vec<Entry>,
}

/// One app of the list, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Its path segment and its name in logs.
    pub name: String,
    pub app_id: String,
    pub kind: AppKind,
    /// Callbacks on its own path, or a long connection it dials itself
    /// (then it has no path, and its webhook secrets are unused).
    pub ingress: AppIngress,
    pub secrets: WebhookSecrets,
    /// For the OpenAPI: with it, the app's chats are snapshotted (a store
    /// app's tokens also need its `app_ticket`).
    pub app_secret: Option<Secret>,
}

/// The list, checked: names and App IDs unique, each app's secrets by the
/// single-app rules (a previous value only next to a current one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Apps(pub Vec<App>);

impl Apps {
    /// Reads and checks `path`; every error names `BRIDGE_APPS_FILE`, the
    /// app (by position and name) and the field, never a secret's value. A
    /// file that does not exist is no list, as a Secret volume without the
    /// `apps.json` key gives (the chart and manifests always name it).
    pub fn read(path: &Path) -> Result<Apps, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Apps::default()),
            Err(e) => {
                return Err(invalid(
                    SETTING,
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        Apps::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Apps, ConfigError> {
        let file: File = serde_json::from_str(text).map_err(|e| {
            // serde's message names the field and the position, not values
            // (a secret's value is never echoed for a type error on it).
            invalid(SETTING, format!("not a valid list of apps: {e}"))
        })?;
        if file.apps.is_empty() {
            return Err(invalid(SETTING, "lists no apps"));
        }
        let (mut names, mut ids) = (HashSet::new(), HashSet::new());
        let mut apps = Vec::with_capacity(file.apps.len());
        for (i, e) in file.apps.into_iter().enumerate() {
            let at = format!("apps[{i}]");
            if !valid_name(&e.name) {
                return Err(invalid(
                    SETTING,
                    format!("{at}.name {:?} must be 1 to 64 of a-z, 0-9, - and _ (it is a path segment)", e.name),
                ));
            }
            let at = format!("apps[{i}] ({})", e.name);
            if !names.insert(e.name.clone()) {
                return Err(invalid(SETTING, format!("{at}: the name is used twice")));
            }
            let app_id = e.app_id.trim().to_owned();
            if app_id.is_empty() {
                return Err(invalid(SETTING, format!("{at}: app_id is empty")));
            }
            if !ids.insert(app_id.clone()) {
                return Err(invalid(
                    SETTING,
                    format!("{at}: app_id {app_id} is used twice"),
                ));
            }
            if e.kind == AppKind::Store && e.ingress == AppIngress::LongConnection {
                return Err(invalid(
                    SETTING,
                    format!("{at}: a store app cannot use the long connection (Feishu offers it to self-built apps only)"),
                ));
            }
            let secret = |v: Option<String>, field: &str, required: bool| match v {
                Some(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                Some(_) if required => Err(invalid(
                    SETTING,
                    format!("{at}.{field} is empty (leave it out to disable its check)"),
                )),
                _ => Ok(None),
            };
            let encrypt_key = secret(e.encrypt_key, "encrypt_key", true)?;
            let app_secret = secret(e.app_secret, "app_secret", true)?;
            let verification_token = secret(e.verification_token, "verification_token", true)?;
            let encrypt_key_previous =
                secret(e.encrypt_key_previous, "encrypt_key_previous", false)?;
            let verification_token_previous = secret(
                e.verification_token_previous,
                "verification_token_previous",
                false,
            )?;
            if e.ingress == AppIngress::LongConnection && app_secret.is_none() {
                return Err(invalid(
                    SETTING,
                    format!("{at}: the long connection needs app_secret (it dials Feishu with the App ID and secret)"),
                ));
            }
            // A long connection is authenticated by the app's own dial; its
            // events carry no signature and are not encrypted.
            if e.ingress == AppIngress::Callback
                && encrypt_key.is_none()
                && verification_token.is_none()
            {
                return Err(invalid(
                    SETTING,
                    format!("{at}: neither encrypt_key nor verification_token is set: its callbacks could not be told from anyone's"),
                ));
            }
            for (previous, current, field) in [
                (&encrypt_key_previous, &encrypt_key, "encrypt_key"),
                (
                    &verification_token_previous,
                    &verification_token,
                    "verification_token",
                ),
            ] {
                if previous.is_some() && current.is_none() {
                    return Err(invalid(
                        SETTING,
                        format!("{at}.{field}_previous is set without {field}"),
                    ));
                }
            }
            apps.push(App {
                name: e.name,
                app_id,
                kind: e.kind,
                ingress: e.ingress,
                secrets: WebhookSecrets {
                    encrypt_key,
                    verification_token,
                    encrypt_key_previous,
                    verification_token_previous,
                },
                app_secret,
            });
        }
        Ok(Apps(apps))
    }
}

impl Apps {
    /// The apps whose events arrive on callback paths.
    pub fn callbacks(&self) -> impl Iterator<Item = &App> {
        self.0.iter().filter(|a| a.ingress == AppIngress::Callback)
    }

    /// The apps that dial a long connection of their own.
    pub fn long_connections(&self) -> impl Iterator<Item = &App> {
        self.0
            .iter()
            .filter(|a| a.ingress == AppIngress::LongConnection)
    }
}

/// The listed apps (`BRIDGE_APPS_FILE`); empty without a list. An app that
/// takes callbacks needs the webhook ingress (`BRIDGE_INGRESS`, which is
/// about the callback port; a listed app's long connection is its own).
pub fn from_args(args: &FeishuArgs) -> Result<Apps, ConfigError> {
    let Some(path) = &args.apps_file else {
        return Ok(Apps::default());
    };
    let apps = Apps::read(path)?;
    if let Some(app) = apps.callbacks().next().filter(|_| !args.ingress.webhook()) {
        return Err(invalid(
            SETTING,
            format!(
                "lists {} whose callbacks need BRIDGE_INGRESS=webhook or both",
                app.name
            ),
        ));
    }
    Ok(apps)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Apps::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_list_is_read_with_defaults() {
        let apps = Apps::parse(
            r#"{"apps":[{"name":"hr","app_id":"cli_1","encrypt_key":"k","verification_token":"t"},
            {"name":"shop","app_id":"cli_2","kind":"store","verification_token":"t2","verification_token_previous":"t1"}]}"#,
        )
        .unwrap();
        assert_eq!(apps.0.len(), 2);
        assert_eq!(apps.0[0].kind, AppKind::SelfBuilt);
        assert_eq!(apps.0[1].kind, AppKind::Store);
        assert_eq!(apps.0[1].secrets.encrypt_key, None);
        assert_eq!(
            apps.0[1].secrets.verification_token_previous,
            Some(Secret::new("t1"))
        );
        assert_eq!(apps.callbacks().count(), 2);
    }

    #[test]
    fn a_self_built_app_may_dial_its_own_long_connection_without_webhook_keys() {
        let apps = Apps::parse(
            r#"{"apps":[{"name":"hr","app_id":"cli_1","encrypt_key":"k"},
            {"name":"it","app_id":"cli_2","ingress":"long_connection","app_secret":"s"}]}"#,
        )
        .unwrap();
        let names =
            |it: &mut dyn Iterator<Item = &App>| it.map(|a| a.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&mut apps.callbacks()), ["hr"]);
        assert_eq!(names(&mut apps.long_connections()), ["it"]);
        assert_eq!(apps.0[1].secrets, WebhookSecrets::default());
    }

    #[test]
    fn start_up_refuses_what_cannot_work_naming_the_setting_and_the_app() {
        let two = |a: &str, b: &str| {
            format!(
                r#"{{"apps":[{{"name":"hr","app_id":"{a}","encrypt_key":"secret-k"}},{{"name":"{b}","app_id":"cli_2","encrypt_key":"secret-k"}}]}}"#
            )
        };
        let e = err(&two("cli_1", "hr"));
        assert!(
            e.contains("BRIDGE_APPS_FILE") && e.contains("apps[1] (hr): the name is used twice"),
            "{e}"
        );
        let e = err(&two("cli_2", "it"));
        assert!(
            e.contains("apps[1] (it): app_id cli_2 is used twice"),
            "{e}"
        );
        let e = err(
            r#"{"apps":[{"name":"s","app_id":"c","kind":"store","ingress":"long_connection","encrypt_key":"k"}]}"#,
        );
        assert!(
            e.contains("a store app cannot use the long connection"),
            "{e}"
        );
        let e = err(r#"{"apps":[{"name":"Bad/Name","app_id":"c","encrypt_key":"k"}]}"#);
        assert!(e.contains("path segment"), "{e}");
        let e = err(
            r#"{"apps":[{"name":"a","app_id":"c","encrypt_key_previous":"secret-old","verification_token":"t"}]}"#,
        );
        assert!(
            e.contains("apps[0] (a).encrypt_key_previous is set without encrypt_key"),
            "{e}"
        );
        let e = err(r#"{"apps":[{"name":"a","app_id":"c","encrypt_key":""}]}"#);
        assert!(e.contains("apps[0] (a).encrypt_key is empty"), "{e}");
        let e = err(r#"{"apps":[{"name":"a","app_id":"c"}]}"#);
        assert!(
            e.contains("neither encrypt_key nor verification_token"),
            "{e}"
        );
        let e = err(r#"{"apps":[{"name":"a","app_id":"c","ingress":"long_connection"}]}"#);
        assert!(
            e.contains("apps[0] (a): the long connection needs app_secret"),
            "{e}"
        );
        let e = err(r#"{"apps":[{"name":"a","app_id":"c","encrypt_key":"secret-k","colour":1}]}"#);
        assert!(e.contains("unknown field `colour`"), "{e}");
        assert!(err(r#"{"apps":[]}"#).contains("lists no apps"));
        for text in [two("cli_1", "hr"), two("cli_2", "it")] {
            assert!(!err(&text).contains("secret-k"));
        }
    }
}
