//! Turns the bytes of a callback request into something the bridge may act
//! on: a URL-verification challenge or a [`VerifiedEvent`], or a
//! [`Rejection`] that says why not.
//!
//! Order of checks, chosen so that nothing unauthenticated is decrypted when
//! it can be avoided:
//! 1. the body must be a JSON object;
//! 2. with an encrypt key: the signature headers, when present, are checked
//!    over the raw bytes *before* decrypting; then the `encrypt` field is
//!    decrypted. Only a `url_verification` may arrive without signature
//!    headers (Feishu sends the challenge unsigned);
//! 3. with a verification token: the token is compared in constant time;
//! 4. the envelope is classified (challenge, v2 event, v1 event).
//!
//! With an encrypt key, an unsigned request is decrypted (it may be the
//! challenge), so what it decrypted to must not show in the answer: told
//! apart, "bad padding" and "not JSON" are a padding oracle that decrypts a
//! captured ciphertext byte by byte. Every unsigned request that is not an
//! accepted challenge is therefore refused as [`Rejection::Unsigned`], one
//! answer whatever went wrong; the reason stays in the log and the metric.
//!
//! Rotation: a previous encrypt key and a previous token may be configured
//! next to the current ones ([`Verifier::with_previous`]). A signature is
//! authentic when it matches under either key, and the key it matched is the
//! one that decrypts; a signature that matches neither (a key no longer
//! configured included) is [`Rejection::BadSignature`], as before. An
//! unsigned body is decrypted with the current key and, when that gives no
//! JSON object, with the previous one; both attempts end in the same single
//! answer, so a second key adds no oracle: what either key decrypted to shows
//! only as an accepted challenge, which takes the token. Which value of each
//! secret matched comes out of [`Verifier::verify_matched`] as [`Matched`].

pub mod crypto;
pub mod envelope;
mod event;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crypto::{decode_signature, Ciphertext};
pub use crypto::{DecryptError, EncryptKey};
use envelope::{Envelope, ReadError, Scalar};
pub use event::{Schema, VerifiedEvent};

/// Why a request was refused. Every variant maps to one HTTP status and one
/// metric label; its message is safe to return and to log (no secrets, no
/// plaintext).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("body is not valid JSON")]
    MalformedJson,
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("{0}")]
    Undecryptable(DecryptError),
    #[error("decrypted payload is not a JSON object")]
    DecryptedNotJson,
    #[error("payload is encrypted: configure the encrypt key")]
    EncryptedWithoutKey,
    #[error("plaintext body but an encrypt key is configured: expected {{\"encrypt\": ...}}")]
    PlaintextWithKey,
    #[error("not a Feishu event envelope: {0}")]
    UnknownEnvelope(&'static str),
    #[error("missing signature headers (X-Lark-Request-Timestamp, X-Lark-Request-Nonce, X-Lark-Signature)")]
    MissingSignature,
    #[error("signature does not match the body")]
    BadSignature,
    #[error("X-Lark-Request-Timestamp is not a unix time in seconds")]
    InvalidTimestamp,
    #[error("X-Lark-Request-Timestamp is outside the accepted window")]
    StaleTimestamp,
    #[error("verification token is missing or wrong")]
    WrongToken,
    /// An unsigned request, with an encrypt key configured, that is not an
    /// accepted challenge. Its message is [`Rejection::MissingSignature`]'s
    /// whatever the cause, which only [`Rejection::detail`] and the label
    /// tell.
    #[error("missing signature headers (X-Lark-Request-Timestamp, X-Lark-Request-Nonce, X-Lark-Signature)")]
    Unsigned(Box<Rejection>),
}

impl Rejection {
    /// Metric label (`rejected_<label>`) and log field.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::MalformedJson | Rejection::NotAnObject => "malformed_json",
            Rejection::Undecryptable(DecryptError::BadBase64) => "bad_base64",
            Rejection::Undecryptable(_) | Rejection::DecryptedNotJson => "undecryptable",
            Rejection::EncryptedWithoutKey => "encrypted_without_key",
            Rejection::PlaintextWithKey => "plaintext_with_key",
            Rejection::UnknownEnvelope(_) => "unknown_envelope",
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::InvalidTimestamp | Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::WrongToken => "wrong_token",
            Rejection::Unsigned(cause) => cause.label(),
        }
    }

    /// The reason for the operator's log; differs from the answer (the
    /// `Display` text) only for [`Rejection::Unsigned`].
    pub fn detail(&self) -> String {
        match self {
            Rejection::Unsigned(cause) => format!("unsigned request: {cause}"),
            other => other.to_string(),
        }
    }

    /// True for authentication failures (401); the rest are malformed input (400).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Rejection::MissingSignature
                | Rejection::BadSignature
                | Rejection::InvalidTimestamp
                | Rejection::StaleTimestamp
                | Rejection::WrongToken
                | Rejection::Unsigned(_)
        )
    }
}

/// The signature headers of a request, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// What an accepted request turned out to be.
// The event is what nearly every request is, and it is moved on whole into
// the pipeline: boxing it would cost an allocation per event to save stack
// space on the rare challenge.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    Challenge(String),
    Event(VerifiedEvent),
}

/// Which configured value of a secret a request matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// `FEISHU_ENCRYPT_KEY`, `FEISHU_VERIFICATION_TOKEN`.
    Current = 0,
    /// `FEISHU_ENCRYPT_KEY_PREVIOUS`, `FEISHU_VERIFICATION_TOKEN_PREVIOUS`:
    /// still accepted while Feishu moves over to the new value.
    Previous = 1,
}

impl Slot {
    /// The metric's `slot` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Previous => "previous",
        }
    }
}

/// Which value of each secret an accepted request matched; `None` for a
/// secret that is not configured, hence not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matched {
    /// The key the signature matched, which is the key that decrypted; for
    /// an unsigned challenge, the key that decrypted it.
    pub encrypt_key: Option<Slot>,
    pub verification_token: Option<Slot>,
}

/// Which values of each secret are configured: the slots a request can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    pub encrypt_key: &'static [Slot],
    pub verification_token: &'static [Slot],
}

fn slots(current: bool, previous: bool) -> &'static [Slot] {
    match (current, previous) {
        (false, _) => &[],
        (true, false) => &[Slot::Current],
        (true, true) => &[Slot::Current, Slot::Previous],
    }
}

/// Holds the configured secrets and applies Feishu's checks.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: Option<EncryptKey>,
    /// Only with `key`.
    previous_key: Option<EncryptKey>,
    token: Option<Secret>,
    /// Only with `token`.
    previous_token: Option<Secret>,
    window: Option<Duration>,
}

impl Verifier {
    pub fn new(
        encrypt_key: Option<&Secret>,
        token: Option<Secret>,
        window: Option<Duration>,
    ) -> Self {
        Verifier {
            key: encrypt_key.map(|k| EncryptKey::new(k.expose())),
            previous_key: None,
            token,
            previous_token: None,
            window,
        }
    }

    /// Also accepts the previous encrypt key and token, during a rotation.
    /// A previous value without a current one is ignored (the settings refuse
    /// it at start-up): it must not turn a check on or off by itself.
    pub fn with_previous(mut self, encrypt_key: Option<&Secret>, token: Option<Secret>) -> Self {
        self.previous_key = encrypt_key
            .filter(|_| self.key.is_some())
            .map(|k| EncryptKey::new(k.expose()));
        self.previous_token = token.filter(|_| self.token.is_some());
        self
    }

    /// The values configured, for the metric's series.
    pub fn configured(&self) -> Configured {
        Configured {
            encrypt_key: slots(self.key.is_some(), self.previous_key.is_some()),
            verification_token: slots(self.token.is_some(), self.previous_token.is_some()),
        }
    }

    /// [`Verifier::verify_matched`] without saying which values matched.
    pub fn verify(
        &self,
        body: &[u8],
        headers: SignatureHeaders<'_>,
        now: SystemTime,
    ) -> Result<Inbound, Rejection> {
        self.verify_matched(body, headers, now)
            .map(|(inbound, _)| inbound)
    }

    /// Checks a callback request; on success, also which configured value of
    /// each secret it matched.
    pub fn verify_matched(
        &self,
        body: &[u8],
        headers: SignatureHeaders<'_>,
        now: SystemTime,
    ) -> Result<(Inbound, Matched), Rejection> {
        let unsigned = self.key.is_some()
            && headers.timestamp.is_none()
            && headers.nonce.is_none()
            && headers.signature.is_none();
        let verified = self.verify_inner(body, headers, now);
        match verified {
            Err(cause) if unsigned => Err(Rejection::Unsigned(Box::new(cause))),
            other => other,
        }
    }

    fn verify_inner(
        &self,
        body: &[u8],
        headers: SignatureHeaders<'_>,
        now: SystemTime,
    ) -> Result<(Inbound, Matched), Rejection> {
        let outer_text = std::str::from_utf8(body).map_err(|_| Rejection::MalformedJson)?;
        let outer = read(outer_text, Rejection::MalformedJson)?;
        let encrypted = match &outer.encrypt {
            Scalar::Absent => None,
            Scalar::Text(t) => Some(t.resolve(outer_text)),
            _ => return Err(Rejection::UnknownEnvelope("encrypt is not a string")),
        };

        let (text, envelope, signed, key_slot) = match (&self.key, encrypted) {
            (None, Some(_)) => return Err(Rejection::EncryptedWithoutKey),
            (None, None) => (outer_text.to_owned(), outer, false, None),
            (Some(_), None) => return Err(Rejection::PlaintextWithKey),
            (Some(current), Some(ciphertext)) => {
                match self.check_signature(current, body, headers, now)? {
                    // The key that signed is the one that decrypts.
                    Some((slot, key)) => {
                        let plain = key.decrypt(ciphertext).map_err(Rejection::Undecryptable)?;
                        let (text, envelope) = open(plain)?;
                        (text, envelope, true, Some(slot))
                    }
                    None => {
                        let (text, envelope, slot) = self.decrypt_unsigned(current, ciphertext)?;
                        (text, envelope, false, Some(slot))
                    }
                }
            }
        };

        if event::is(&text, &envelope.kind, "url_verification") {
            let token_slot = self.check_token(text_of(&text, &envelope.token))?;
            let matched = Matched {
                encrypt_key: key_slot,
                verification_token: token_slot,
            };
            return match &envelope.challenge {
                Scalar::Text(c) => Ok((Inbound::Challenge(c.resolve(&text).to_owned()), matched)),
                _ => Err(Rejection::UnknownEnvelope(
                    "url_verification without a string challenge",
                )),
            };
        }
        if self.key.is_some() && !signed {
            return Err(Rejection::MissingSignature);
        }

        let token = match &envelope.header {
            envelope::Slot::Value(h) => text_of(&text, &h.token),
            envelope::Slot::Null | envelope::Slot::Wrong => None,
            envelope::Slot::Absent => text_of(&text, &envelope.token),
        };
        let token_slot = self.check_token(token)?;
        let matched = Matched {
            encrypt_key: key_slot,
            verification_token: token_slot,
        };
        VerifiedEvent::classify(text, envelope).map(|event| (Inbound::Event(event), matched))
    }

    /// Returns the key whose signature the request carried; `Ok(None)` means
    /// no signature headers at all, which only a challenge may omit. The
    /// current key is tried first: the previous one costs a second digest
    /// only for requests that do not match the current one.
    fn check_signature<'k>(
        &'k self,
        current: &'k EncryptKey,
        body: &[u8],
        headers: SignatureHeaders<'_>,
        now: SystemTime,
    ) -> Result<Option<(Slot, &'k EncryptKey)>, Rejection> {
        let (ts, nonce, sig) = match (headers.timestamp, headers.nonce, headers.signature) {
            (None, None, None) => return Ok(None),
            (Some(ts), Some(nonce), Some(sig)) => (ts, nonce, sig),
            _ => return Err(Rejection::MissingSignature),
        };
        let provided = decode_signature(sig).ok_or(Rejection::BadSignature)?;
        let matched = if current.verify_decoded(ts, nonce, body, &provided) {
            (Slot::Current, current)
        } else {
            match &self.previous_key {
                Some(previous) if previous.verify_decoded(ts, nonce, body, &provided) => {
                    (Slot::Previous, previous)
                }
                _ => return Err(Rejection::BadSignature),
            }
        };
        if let Some(window) = self.window {
            let sent: u64 = ts.trim().parse().map_err(|_| Rejection::InvalidTimestamp)?;
            let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            if now.abs_diff(sent) > window.as_secs() {
                return Err(Rejection::StaleTimestamp);
            }
        }
        Ok(Some(matched))
    }

    /// An unsigned body (which only a challenge may be): decrypted with the
    /// current key, then, when that gives no JSON object, with the previous
    /// one. A wrong key practically never decrypts to a JSON object, so this
    /// finds the key that encrypted it. When neither does, the current key's
    /// failure is the one reported; the caller turns any failure into
    /// [`Rejection::Unsigned`], one answer whichever key got how far.
    fn decrypt_unsigned(
        &self,
        current: &EncryptKey,
        text: &str,
    ) -> Result<(String, Envelope, Slot), Rejection> {
        let blob = Ciphertext::decode(text).map_err(Rejection::Undecryptable)?;
        let open_with = |key: &EncryptKey| {
            let plain = key
                .decrypt_decoded(&blob)
                .map_err(Rejection::Undecryptable)?;
            open(plain)
        };
        match open_with(current) {
            Ok((text, envelope)) => Ok((text, envelope, Slot::Current)),
            Err(with_current) => match &self.previous_key {
                Some(previous) => open_with(previous)
                    .map(|(text, envelope)| (text, envelope, Slot::Previous))
                    .map_err(|_| with_current),
                None => Err(with_current),
            },
        }
    }

    /// Compares the token in constant time with the current value, then
    /// with the previous one; `Ok(None)` when no token is configured.
    fn check_token(&self, provided: Option<&str>) -> Result<Option<Slot>, Rejection> {
        let Some(current) = &self.token else {
            return Ok(None);
        };
        let Some(provided) = provided else {
            return Err(Rejection::WrongToken);
        };
        let equals = |expected: &Secret| -> bool {
            provided
                .as_bytes()
                .ct_eq(expected.expose().as_bytes())
                .into()
        };
        if equals(current) {
            Ok(Some(Slot::Current))
        } else if self.previous_token.as_ref().is_some_and(equals) {
            Ok(Some(Slot::Previous))
        } else {
            Err(Rejection::WrongToken)
        }
    }
}

/// Accepts an event that arrived on the long connection. The channel is
/// what authenticates it (the app secret obtained the connection URL, TLS
/// carries it), so the payload is the plaintext envelope with no signature
/// or token to check, exactly as every official SDK treats it.
pub fn from_long_connection(payload: &[u8]) -> Result<VerifiedEvent, Rejection> {
    let text = std::str::from_utf8(payload).map_err(|_| Rejection::MalformedJson)?;
    let envelope = read(text, Rejection::MalformedJson)?;
    if event::is(text, &envelope.kind, "url_verification") {
        return Err(Rejection::UnknownEnvelope(
            "url_verification on the long connection",
        ));
    }
    VerifiedEvent::classify(text.to_owned(), envelope)
}

/// Reads a JSON object; anything else is `on_error` (a body that is JSON
/// but not an object, [`Rejection::NotAnObject`]).
fn read(text: &str, on_error: Rejection) -> Result<Envelope, Rejection> {
    match envelope::read(text) {
        Ok(envelope) => Ok(envelope),
        Err(ReadError::NotAnObject) if matches!(on_error, Rejection::MalformedJson) => {
            Err(Rejection::NotAnObject)
        }
        Err(_) => Err(on_error),
    }
}

/// A decrypted payload as text and envelope.
fn open(plain: Vec<u8>) -> Result<(String, Envelope), Rejection> {
    let text = String::from_utf8(plain).map_err(|_| Rejection::DecryptedNotJson)?;
    let envelope = read(&text, Rejection::DecryptedNotJson)?;
    Ok((text, envelope))
}

/// A field's string, when it is one.
fn text_of<'a>(text: &'a str, field: &'a Scalar) -> Option<&'a str> {
    match field {
        Scalar::Text(t) => Some(t.resolve(text)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
