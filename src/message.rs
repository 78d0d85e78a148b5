//! A routed event as a Kafka message: its destination, key, value and
//! headers (the bridge's own, then the CloudEvents binary-mode ones), or,
//! when it cannot become its record, its dead letter.

use crate::cloudevents;
use crate::protocol::VerifiedEvent;
use crate::record::{member, raw, DeadLetter, NormalizeError, DEAD_LETTER_SCHEMA, RAW_SCHEMA};
use crate::routing::Route;
use crate::sink::{Destination, Outgoing};

/// The message for `event`, and whether it is its record (`Ok`) or a dead
/// letter (`Err`, with why).
pub fn build(
    event: &VerifiedEvent,
    route: Route,
    received_at_ms: i64,
) -> (Outgoing, Result<(), NormalizeError>) {
    let built = match route {
        Route::Member(kind) => member::normalize(event, kind, received_at_ms).map(|rec| {
            let about = About {
                event_id: &rec.event_id,
                event_type: &rec.event_type,
                tenant_key: rec.tenant_key.as_deref(),
                app_id: rec.app_id.as_deref(),
                time_ms: rec.create_time_ms,
            };
            Outgoing {
                destination: Destination::Record,
                key: Some(rec.chat_id.clone()),
                payload: to_json(&rec),
                headers: about.headers(rec.schema, about.event_type, about.event_id, None),
            }
        }),
        Route::Raw => raw::encode(event).map(|rec| {
            let about = About {
                event_id: &rec.event_id,
                event_type: &rec.event_type,
                tenant_key: rec.tenant_key.as_deref(),
                app_id: rec.app_id.as_deref(),
                time_ms: rec.create_time_ms,
            };
            Outgoing {
                destination: Destination::Raw,
                key: rec.key.clone(),
                payload: to_json(&rec.value),
                headers: about.headers(RAW_SCHEMA, about.event_type, about.event_id, None),
            }
        }),
    };
    match built {
        Ok(msg) => (msg, Ok(())),
        Err(reason) => (dead_letter(event, &reason, received_at_ms), Err(reason)),
    }
}

fn dead_letter(event: &VerifiedEvent, reason: &NormalizeError, received_at_ms: i64) -> Outgoing {
    let dl = DeadLetter::new(event, reason, received_at_ms);
    let event_id = event.event_id().unwrap_or_default();
    // ce_id must not be empty; an event without event_id gets one derived
    // from its content, so the same envelope keeps its id.
    let ce_id = if event_id.is_empty() {
        cloudevents::content_id(&to_json(event.envelope()))
    } else {
        event_id.to_owned()
    };
    let about = About {
        event_id,
        event_type: event.event_type(),
        tenant_key: dl.tenant_key(),
        app_id: dl.app_id(),
        time_ms: dl.create_time_ms(),
    };
    let headers = about.headers(
        DEAD_LETTER_SCHEMA,
        cloudevents::DEAD_LETTER_TYPE,
        &ce_id,
        Some(reason.to_string()),
    );
    Outgoing {
        destination: Destination::DeadLetter,
        key: dl.chat_id().map(str::to_owned),
        payload: to_json(&dl),
        headers,
    }
}

/// What every message's headers say of its event.
struct About<'a> {
    event_id: &'a str,
    event_type: &'a str,
    tenant_key: Option<&'a str>,
    app_id: Option<&'a str>,
    time_ms: Option<i64>,
}

impl About<'_> {
    /// `event_id`, `event_type`, `tenant_key` (empty when absent), `schema`,
    /// `reason` (dead letters), then the CloudEvents attributes.
    fn headers(
        &self,
        schema: &'static str,
        ce_type: &str,
        ce_id: &str,
        reason: Option<String>,
    ) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("event_id", self.event_id.to_owned()),
            ("event_type", self.event_type.to_owned()),
            ("tenant_key", self.tenant_key.unwrap_or_default().to_owned()),
            ("schema", schema.to_owned()),
        ];
        if let Some(reason) = reason {
            headers.push(("reason", reason));
        }
        headers.extend(
            cloudevents::Attributes {
                id: ce_id,
                kind: ce_type,
                app_id: self.app_id,
                time_ms: self.time_ms,
            }
            .headers(),
        );
        headers
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs and JSON values (string keys, no
    // maps with non-string keys, no floats from outside JSON) cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
