use super::super::{parse_args, validate_args, Config};
use super::*;

/// A directory for one test's secret files, unique to the test and process.
fn secret_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fkb-cfg-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Validates the long-connection ingress with credentials, plus `extra`.
fn long_connection_with(extra: &[&str]) -> Result<Config, ConfigError> {
    let mut args = vec![
        "--ingress",
        "long-connection",
        "--app-id",
        "cli_1",
        "--app-secret",
        "s",
    ];
    args.extend_from_slice(extra);
    validate_args(&args)
}

#[test]
fn secrets_from_files_and_never_printed() {
    let dir = secret_dir("files");
    let path = dir.join("key");
    std::fs::write(&path, "s3cret-key\n").unwrap();
    let cfg = validate_args(&["--encrypt-key-file", path.to_str().unwrap()]).expect("valid");
    assert_eq!(cfg.encrypt_key.as_ref().unwrap().expose(), "s3cret-key");
    assert!(!format!("{cfg:?}").contains("s3cret"));
    // A required key the Secret lacks: the error names the setting and the key.
    let missing = dir.join("verification-token");
    let err = validate_args(&["--verification-token-file", missing.to_str().unwrap()]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_VERIFICATION_TOKEN_FILE");
    assert!(
        err.to_string().contains("no key \"verification-token\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
    let err = validate_args(&["--encrypt-key", ""]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_ENCRYPT_KEY");
}

#[test]
fn previous_secrets_missing_or_empty_files_mean_none() {
    let dir = secret_dir("prev");
    let file = |name: &str, text: Option<&str>| {
        let path = dir.join(name);
        match text {
            Some(text) => std::fs::write(&path, text).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        path.to_str().unwrap().to_owned()
    };
    let (key_file, token_file) = (
        file("key", Some("new-key\n")),
        file("token", Some("new-tok")),
    );
    let current = [
        "--encrypt-key-file",
        key_file.as_str(),
        "--verification-token-file",
        token_file.as_str(),
    ];
    let with = |extra: &[&str]| {
        let mut args = current.to_vec();
        args.extend_from_slice(extra);
        validate_args(&args)
    };

    // A Secret volume without the keys: files that do not exist.
    let (missing_key, missing_token) = (file("key-prev", None), file("tok-prev", None));
    let cfg = with(&[
        "--encrypt-key-previous-file",
        &missing_key,
        "--verification-token-previous-file",
        &missing_token,
    ])
    .expect("a missing previous file is no previous value");
    assert!(cfg.encrypt_key_previous.is_none() && cfg.verification_token_previous.is_none());
    assert_eq!(cfg.encrypt_key.as_ref().unwrap().expose(), "new-key");

    // A rotation that is over: the keys are there but empty.
    let (empty_key, empty_token) = (file("key-empty", Some("")), file("tok-empty", Some("\n")));
    let cfg = with(&[
        "--encrypt-key-previous-file",
        &empty_key,
        "--verification-token-previous-file",
        &empty_token,
    ])
    .expect("an empty previous file is no previous value");
    assert!(cfg.encrypt_key_previous.is_none() && cfg.verification_token_previous.is_none());
    let cfg = with(&[
        "--encrypt-key-previous",
        "",
        "--verification-token-previous",
        "",
    ])
    .expect("an empty previous value is none");
    assert!(cfg.encrypt_key_previous.is_none() && cfg.verification_token_previous.is_none());

    // During a rotation: both values, from files or by value, never printed.
    let (old_key, old_token) = (
        file("key-old", Some("old-key\r\n")),
        file("tok-old", Some("old-tok")),
    );
    let cfg = with(&[
        "--encrypt-key-previous-file",
        &old_key,
        "--verification-token-previous-file",
        &old_token,
    ])
    .unwrap();
    assert_eq!(
        cfg.encrypt_key_previous.as_ref().unwrap().expose(),
        "old-key"
    );
    assert_eq!(
        cfg.verification_token_previous.as_ref().unwrap().expose(),
        "old-tok"
    );
    assert!(!format!("{cfg:?}").contains("old-"));
    let cfg = with(&["--verification-token-previous", "old-tok-2"]).unwrap();
    assert_eq!(
        cfg.verification_token_previous.unwrap().expose(),
        "old-tok-2"
    );
    // Equal to the current value: allowed (see `previous_secret`).
    assert!(with(&["--encrypt-key-previous", "new-key"]).is_ok());

    // A directory is not a missing file: reading it fails loudly.
    let err = with(&["--encrypt-key-previous-file", dir.to_str().unwrap()]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_ENCRYPT_KEY_PREVIOUS_FILE");
    // By value and from a file at once: refused as for the current ones.
    let both = [
        "--encrypt-key-previous",
        "x",
        "--encrypt-key-previous-file",
        &old_key,
    ];
    assert!(parse_args(&both).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_previous_secret_needs_a_current_one() {
    let dir = secret_dir("prev-only");
    let old = dir.join("old");
    std::fs::write(&old, "old\n").unwrap();
    let old = old.to_str().unwrap();

    let err = validate_args(&["--encrypt-key-previous", "0ld-s3cret"]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_ENCRYPT_KEY_PREVIOUS");
    assert!(err.to_string().contains("FEISHU_ENCRYPT_KEY "), "{err}");
    assert!(!err.to_string().contains("0ld-s3cret"), "{err}");
    let err = validate_args(&["--encrypt-key-previous-file", old]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_ENCRYPT_KEY_PREVIOUS_FILE");
    let err = validate_args(&[
        "--encrypt-key",
        "k",
        "--verification-token-previous",
        "0ld-s3cret",
    ])
    .unwrap_err();
    assert_eq!(err.setting, "FEISHU_VERIFICATION_TOKEN_PREVIOUS");
    let err = validate_args(&["--verification-token-previous-file", old]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_VERIFICATION_TOKEN_PREVIOUS_FILE");
    // Missing or empty: no previous value, so nothing is wrong.
    let missing = dir.join("missing");
    assert!(validate_args(&["--encrypt-key-previous-file", missing.to_str().unwrap()]).is_ok());
    assert!(validate_args(&["--verification-token-previous", ""]).is_ok());
    // Not read at all without the webhook ingress, like the current ones.
    let lc = long_connection_with(&["--encrypt-key-previous", "0ld-s3cret"]).unwrap();
    assert!(lc.encrypt_key_previous.is_none());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn long_connection_needs_credentials_and_a_known_domain() {
    let err = validate_args(&["--ingress", "long-connection"]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_APP_ID");
    let err = validate_args(&["--ingress", "both", "--app-id", "cli_1"]).unwrap_err();
    assert_eq!(err.setting, "FEISHU_APP_SECRET");
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
    assert!(validate_args(&["--encrypt-key", ""]).is_err());
    // Webhook only: no credentials needed, none kept.
    assert!(validate_args(&[]).unwrap().long_connection.is_none());
}
