//! An authentic event: its plaintext and what was read from it, once
//! ([`envelope`](super::envelope)). Routing, every record form, the dead
//! letter, dedup's key and the CloudEvents attributes read this value; none
//! parses the event again.

use std::ops::Range;

use super::envelope::{Body, Envelope, Header, Scalar, Slot, Text};
use super::Rejection;

/// Envelope generation, which decides the dedup key and where the token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    V1,
    V2,
}

/// What replaces a token in the records.
const REDACTED: &str = "\"[redacted]\"";

/// An event that passed every configured check. It can only be built by
/// the verifier or the long connection, so holding one is proof of
/// authenticity.
#[derive(Debug)]
pub struct VerifiedEvent {
    schema: Schema,
    /// The decrypted envelope, as Feishu sent it (token included).
    text: String,
    event_type: Option<Text>,
    event_id: Option<Text>,
    /// Default (every field absent) for a schema 1.0 event.
    header: Header,
    event: Slot<Body>,
    tokens: Vec<Range<usize>>,
}

impl VerifiedEvent {
    /// Classifies an authenticated envelope as Go's `EventFuzzy` does: v2
    /// when it has a header (event type from `header.event_type`), v1 when
    /// `type == "event_callback"` (event type from `event.type`).
    pub(super) fn classify(text: String, env: Envelope) -> Result<VerifiedEvent, Rejection> {
        let Envelope {
            kind,
            uuid,
            header,
            event,
            tokens,
            ..
        } = env;
        let (schema, event_type, event_id, header) = match header {
            Slot::Absent => {
                if !is(&text, &kind, "event_callback") {
                    return Err(Rejection::UnknownEnvelope(
                        "neither a v2 header nor type event_callback/url_verification",
                    ));
                }
                let event_type = match &event {
                    Slot::Value(body) => into_text(body.kind.clone()),
                    _ => None,
                };
                (Schema::V1, event_type, into_text(uuid), Header::default())
            }
            Slot::Value(mut header) => {
                let Some(event_type) = into_text(std::mem::take(&mut header.event_type)) else {
                    return Err(Rejection::UnknownEnvelope(
                        "header.event_type is missing or not a string",
                    ));
                };
                let event_id = into_text(header.event_id.clone());
                (Schema::V2, Some(event_type), event_id, header)
            }
            Slot::Null | Slot::Wrong => {
                return Err(Rejection::UnknownEnvelope("header is not an object"))
            }
        };
        Ok(VerifiedEvent {
            schema,
            text,
            event_type,
            event_id,
            header,
            event,
            tokens,
        })
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    pub fn event_type(&self) -> &str {
        self.event_type
            .as_ref()
            .map_or("", |t| t.resolve(&self.text))
    }

    /// `header.event_id` (v2) or `uuid` (v1), when present as a string.
    pub fn event_id(&self) -> Option<&str> {
        self.event_id.as_ref().map(|t| t.resolve(&self.text))
    }

    /// The decrypted envelope as received, token included: for a digest,
    /// never for a record.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `header` (every field absent for a schema 1.0 event).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// `event`, when it is an object.
    pub fn body(&self) -> Option<&Body> {
        match &self.event {
            Slot::Value(body) => Some(body),
            _ => None,
        }
    }

    /// A string read from this event.
    pub fn str<'a>(&'a self, text: &'a Text) -> &'a str {
        text.resolve(&self.text)
    }

    /// A field's string, when it is one.
    pub fn text_of<'a>(&'a self, field: &'a Scalar) -> Option<&'a str> {
        match field {
            Scalar::Text(t) => Some(self.str(t)),
            _ => None,
        }
    }

    /// The chat the event is about, where it names one: `event.chat_id`
    /// (chat and member events) or, without that key, `event.message.chat_id`
    /// (message events); never empty.
    pub fn chat_id(&self) -> Option<&str> {
        let body = self.body()?;
        let field = match body.chat_id {
            Scalar::Absent => &body.message_chat_id,
            ref present => present,
        };
        self.text_of(field).filter(|s| !s.is_empty())
    }

    /// `header.tenant_key` (schema 1.0: `event.tenant_key`), when a string.
    pub fn tenant_key(&self) -> Option<&str> {
        match self.schema {
            Schema::V2 => self.text_of(&self.header.tenant_key),
            Schema::V1 => self.text_of(&self.body()?.tenant_key),
        }
    }

    /// `header.app_id` (schema 1.0: `event.app_id`), when a string.
    pub fn app_id(&self) -> Option<&str> {
        match self.schema {
            Schema::V2 => self.text_of(&self.header.app_id),
            Schema::V1 => self.text_of(&self.body()?.app_id),
        }
    }

    /// `header.create_time` in ms, when it reads as one. Best effort, for the
    /// records that are published whatever it holds (raw, dead letters).
    pub fn create_time_ms(&self) -> Option<i64> {
        match &self.header.create_time {
            Scalar::Int(ms) => Some(*ms),
            Scalar::Text(t) => self.str(t).trim().parse().ok(),
            _ => None,
        }
    }

    /// The decrypted envelope as Feishu sent it, byte for byte, but with
    /// every verification token replaced by `"[redacted]"`: a Kafka topic
    /// is not a place for a credential.
    pub fn redacted(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + REDACTED.len() * self.tokens.len());
        let mut at = 0;
        for range in &self.tokens {
            // In text order and disjoint, as read; anything else would be
            // a reader's bug, and is skipped rather than sliced wrongly.
            let Some(before) = self.text.get(at..range.start) else {
                continue;
            };
            out.push_str(before);
            out.push_str(REDACTED);
            at = range.end;
        }
        out.push_str(self.text.get(at..).unwrap_or_default());
        out
    }

    /// [`VerifiedEvent::redacted`] as a JSON value, for the tests.
    #[cfg(test)]
    pub fn redacted_envelope(&self) -> serde_json::Value {
        serde_json::from_str(&self.redacted()).expect("a redacted envelope is JSON")
    }

    /// The event of an envelope given as a JSON value, for the tests:
    /// `None` when it is not a classifiable event envelope.
    #[cfg(test)]
    pub fn for_tests(envelope: serde_json::Value) -> Option<Self> {
        let text = envelope.to_string();
        let env = super::envelope::read(&text).ok()?;
        Self::classify(text, env).ok()
    }
}

/// Whether a field is the string `want`.
pub(super) fn is(text: &str, field: &Scalar, want: &str) -> bool {
    matches!(field, Scalar::Text(t) if t.resolve(text) == want)
}

fn into_text(field: Scalar) -> Option<Text> {
    match field {
        Scalar::Text(t) => Some(t),
        _ => None,
    }
}
