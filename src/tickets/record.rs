//! The records of the internal topic (`BRIDGE_INTERNAL_TOPIC`): what one
//! replica learned that the others need. Keyed so that compaction keeps the
//! newest of each: `app_ticket/<app_id>`.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The `schema` header and field of a ticket record.
pub const TICKET_SCHEMA: &str = "feishu.bridge.app_ticket.v1";
const TICKET_KEY_PREFIX: &str = "app_ticket/";

/// A store app's newest `app_ticket`, as written to the internal topic.
#[derive(Debug, Serialize, Deserialize)]
struct TicketValue<'a> {
    schema: &'a str,
    app_id: &'a str,
    app_ticket: &'a str,
    /// When the callback that carried it was answered (ms since the epoch).
    received_at_ms: i64,
}

/// The key of `app_id`'s ticket record.
pub fn ticket_key(app_id: &str) -> String {
    format!("{TICKET_KEY_PREFIX}{app_id}")
}

/// The value of a ticket record.
pub fn ticket_value(app_id: &str, ticket: &Secret, received_at_ms: i64) -> Vec<u8> {
    let value = TicketValue {
        schema: TICKET_SCHEMA,
        app_id,
        app_ticket: ticket.expose(),
        received_at_ms,
    };
    // A struct of strings and an integer: cannot fail.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// The app and ticket of a record read back; `None` for a record that is
/// not a ticket of this version (skipped: a newer bridge may write more).
pub fn read_ticket(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<(String, Secret)> {
    let key = std::str::from_utf8(key?).ok()?;
    let app_in_key = key.strip_prefix(TICKET_KEY_PREFIX)?;
    let value: TicketValue = serde_json::from_slice(value?).ok()?;
    (value.schema == TICKET_SCHEMA && value.app_id == app_in_key && !value.app_ticket.is_empty())
        .then(|| (value.app_id.to_owned(), Secret::new(value.app_ticket)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_record_reads_back_and_nothing_else_does() {
        let ticket = Secret::new("t-1");
        let key = ticket_key("cli_a");
        let value = ticket_value("cli_a", &ticket, 5);
        let (app, read) = read_ticket(Some(key.as_bytes()), Some(&value)).unwrap();
        assert_eq!((app.as_str(), read.expose()), ("cli_a", "t-1"));
        // Another app's key, another schema, garbage: skipped.
        assert!(read_ticket(Some(b"app_ticket/cli_b"), Some(&value)).is_none());
        assert!(read_ticket(Some(b"tenant/cli_a/t"), Some(&value)).is_none());
        assert!(read_ticket(Some(key.as_bytes()), Some(b"{}")).is_none());
        assert!(read_ticket(None, Some(&value)).is_none());
        assert!(read_ticket(Some(key.as_bytes()), None).is_none());
    }
}
