//! A routed event as a Kafka message: its destination, key, value and
//! headers (the bridge's own, then the CloudEvents binary-mode ones), or,
//! when it cannot become its record, its dead letter.

use crate::cloudevents;
use crate::destination::Destination;
use crate::protocol::VerifiedEvent;
use crate::record::{member, raw, DeadLetter, Meta, NormalizeError, DEAD_LETTER_SCHEMA};
use crate::routing::Route;
use crate::sink::Outgoing;

/// The message for `event`, and whether it is its record (`Ok`) or a dead
/// letter (`Err`, with why).
pub fn build(
    event: &VerifiedEvent,
    route: Route,
    received_at_ms: i64,
) -> (Outgoing, Result<(), NormalizeError>) {
    let built = match route {
        Route::Member(kind) => member::normalize(event, kind, received_at_ms).map(|rec| Outgoing {
            destination: Destination::Record,
            key: Some(rec.chat_id.to_owned()),
            headers: headers(
                &rec.meta,
                rec.schema,
                rec.meta.event_type,
                rec.meta.event_id,
                None,
            ),
            payload: to_json(&rec),
        }),
        Route::Raw => raw::encode(event).map(|rec| Outgoing {
            destination: Destination::Raw,
            key: rec.key.map(str::to_owned),
            headers: headers(
                &rec.meta,
                raw::schema_of(event),
                rec.meta.event_type,
                rec.meta.event_id,
                None,
            ),
            payload: rec.value.into_bytes(),
        }),
    };
    match built {
        Ok(msg) => (msg, Ok(())),
        Err(reason) => (dead_letter(event, &reason, received_at_ms), Err(reason)),
    }
}

fn dead_letter(event: &VerifiedEvent, reason: &NormalizeError, received_at_ms: i64) -> Outgoing {
    let dl = DeadLetter::new(event, reason, received_at_ms);
    let meta = dl.meta();
    // ce_id must not be empty; an event without event_id gets one derived
    // from its content, so the same envelope keeps its id.
    let ce_id = if meta.event_id.is_empty() {
        cloudevents::content_id(event.text().as_bytes())
    } else {
        meta.event_id.to_owned()
    };
    Outgoing {
        destination: Destination::DeadLetter,
        key: dl.chat_id().map(str::to_owned),
        headers: headers(
            &meta,
            DEAD_LETTER_SCHEMA,
            cloudevents::DEAD_LETTER_TYPE,
            &ce_id,
            Some(reason.to_string()),
        ),
        payload: to_json(&dl),
    }
}

/// `event_id`, `event_type`, `tenant_key` and `app_id` (empty when absent),
/// `schema`, `reason` (dead letters), then the CloudEvents attributes.
fn headers(
    meta: &Meta,
    schema: &'static str,
    ce_type: &str,
    ce_id: &str,
    reason: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("event_id", meta.event_id.to_owned()),
        ("event_type", meta.event_type.to_owned()),
        ("tenant_key", meta.tenant_key.unwrap_or_default().to_owned()),
        ("app_id", meta.app_id.unwrap_or_default().to_owned()),
        ("schema", schema.to_owned()),
    ];
    headers.extend(reason.map(|r| ("reason", r)));
    headers.extend(
        cloudevents::Attributes {
            id: ce_id,
            kind: ce_type,
            app_id: meta.app_id,
            time_ms: meta.create_time_ms,
        }
        .headers(),
    );
    headers
}

/// Room for a member record of one user (about 700 bytes) in one
/// allocation; serde_json's own start (128 bytes) grew three times per record.
const RECORD_CAPACITY: usize = 1024;

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_CAPACITY);
    // Serializing these plain structs and JSON values (string keys, no
    // maps with non-string keys, no floats from outside JSON) cannot fail.
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}
