//! CloudEvents 1.0 attributes for every record, in the Kafka protocol
//! binding's binary content mode: each attribute is a `ce_`-prefixed header,
//! the data's media type is `content-type`, and the record key (`chat_id`)
//! is the `partitionkey` extension, which the binding maps to the key itself.
//! A CloudEvents SDK then reads our records without knowing this service;
//! the bridge's own headers (`event_id`, `schema`, …) stay next to these.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// App ids are `cli_` plus hex; anything else is escaped (all but RFC 3986's
/// unreserved characters) so that the source stays one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

const SOURCE_PREFIX: &str = "/feishu/apps/";
const UNKNOWN_APP: &str = "unknown";

pub const SPEC_VERSION: &str = "1.0";
/// `ce_type` of dead letters (records carry Feishu's event type).
pub const DEAD_LETTER_TYPE: &str = crate::record::DEAD_LETTER_SCHEMA;
pub const CONTENT_TYPE: &str = "application/json";

/// The attributes of one record.
pub struct Attributes<'a> {
    /// `ce_id`: Feishu's `header.event_id`, unique per event (and per source).
    pub id: &'a str,
    /// `ce_type`.
    pub kind: &'a str,
    /// The app the event was sent to (`header.app_id`), for `ce_source`.
    pub app_id: Option<&'a str>,
    /// `header.create_time` in ms, for `ce_time`; left out when absent.
    pub time_ms: Option<i64>,
}

impl Attributes<'_> {
    /// The binary-mode headers, in a fixed order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("ce_specversion", SPEC_VERSION.to_owned()),
            ("ce_id", self.id.to_owned()),
            ("ce_type", self.kind.to_owned()),
            ("ce_source", source(self.app_id)),
        ];
        if let Some(time) = self.time_ms.and_then(rfc3339) {
            h.push(("ce_time", time));
        }
        h.push(("content-type", CONTENT_TYPE.to_owned()));
        h
    }
}

/// `ce_source`: a URI reference naming the Feishu app. `source` + `id` must
/// be unique per event, and Feishu's event ids are unique per app.
pub fn source(app_id: Option<&str>) -> String {
    match app_id.filter(|a| !a.is_empty()) {
        Some(app) => format!("{SOURCE_PREFIX}{}", utf8_percent_encode(app, SEGMENT)),
        None => format!("{SOURCE_PREFIX}{UNKNOWN_APP}"),
    }
}

/// The app id in a `ce_source` that [`source`] made; `None` for another
/// source or for the app unknown (the envelope named none).
pub fn app_of_source(source: &str) -> Option<Cow<'_, str>> {
    let app = source.strip_prefix(SOURCE_PREFIX)?;
    if app == UNKNOWN_APP || app.is_empty() || app.contains('/') {
        return None;
    }
    percent_decode_str(app).decode_utf8().ok()
}

/// An id for an event that has none (a dead letter without `event_id`):
/// `sha256:` and the hex digest of its envelope.
pub fn content_id(envelope: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(envelope)))
}

/// Milliseconds since the epoch as RFC 3339 in UTC, e.g. `2020-12-23T12:19:49.000Z`.
fn rfc3339(ms: i64) -> Option<String> {
    // RFC 3339 has four-digit years, and the formatter fails (to_string
    // would panic) past 9999-12-31T23:59:59.999Z; a create_time from input
    // can be anything.
    const LAST_MS: u64 = 253_402_300_799_999;
    let ms = u64::try_from(ms).ok().filter(|&ms| ms <= LAST_MS)?;
    let t = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    Some(humantime::format_rfc3339_millis(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_the_seed_event() {
        let h = Attributes {
            id: "5e3702a84e847582be8db7fb73283c02",
            kind: "im.chat.member.user.withdrawn_v1",
            app_id: Some("cli_9f5343c580712544"),
            time_ms: Some(1608725989000),
        }
        .headers();
        assert_eq!(
            h,
            vec![
                ("ce_specversion", "1.0".to_owned()),
                ("ce_id", "5e3702a84e847582be8db7fb73283c02".to_owned()),
                ("ce_type", "im.chat.member.user.withdrawn_v1".to_owned()),
                ("ce_source", "/feishu/apps/cli_9f5343c580712544".to_owned()),
                ("ce_time", "2020-12-23T12:19:49.000Z".to_owned()),
                ("content-type", "application/json".to_owned()),
            ]
        );
    }

    proptest::proptest! {
        // Every input reaches these headers: no value may panic them.
        #[test]
        fn any_time_and_app_id_give_headers(ms in proptest::num::i64::ANY, app in ".*") {
            let h = Attributes { id: "x", kind: "t", app_id: Some(&app), time_ms: Some(ms) }.headers();
            let source = &h.iter().find(|(k, _)| *k == "ce_source").unwrap().1;
            proptest::prop_assert!(source.bytes().all(|b| b.is_ascii_graphic()));
        }
    }

    #[test]
    fn odd_inputs_still_give_valid_attributes() {
        let h = Attributes {
            id: "x",
            kind: DEAD_LETTER_TYPE,
            app_id: Some("a b/c"),
            time_ms: Some(-5),
        }
        .headers();
        assert!(h.contains(&("ce_source", "/feishu/apps/a%20b%2Fc".to_owned())));
        assert!(!h.iter().any(|(k, _)| *k == "ce_time"));
        assert_eq!(source(None), "/feishu/apps/unknown");
        for app in ["cli_9f5343c580712544", "a b/c", "应用"] {
            assert_eq!(app_of_source(&source(Some(app))).as_deref(), Some(app));
        }
        assert_eq!(app_of_source(&source(None)), None);
        assert_eq!(app_of_source("/other/cli_a"), None);
        assert_eq!(source(Some("")), "/feishu/apps/unknown");
        assert_eq!(rfc3339(1), Some("1970-01-01T00:00:00.001Z".to_owned()));
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(rfc3339(253_402_300_800_000), None);
        assert_eq!(
            rfc3339(253_402_300_799_999),
            Some("9999-12-31T23:59:59.999Z".to_owned())
        );
        assert_eq!(
            content_id(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
