//! The records of the internal topic (`BRIDGE_INTERNAL_TOPIC`): what one
//! replica learned that the others need. Keyed so that compaction keeps the
//! newest of each: `app_ticket/<app_id>`, and `tenant/<app_id>/<tenant_key>`
//! for each tenant a store app's events came from (where it is installed).

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

pub const TENANT_SCHEMA: &str = "feishu.bridge.tenant.v1";
const TENANT_KEY_PREFIX: &str = "tenant/";

/// A tenant a store app is installed in, as written to the internal topic.
#[derive(Debug, Serialize, Deserialize)]
struct TenantValue<'a> {
    schema: &'a str,
    app_id: &'a str,
    tenant_key: &'a str,
    /// When this replica first saw an event of it (ms since the epoch).
    seen_at_ms: i64,
}

/// What a record of the internal topic says.
#[derive(Debug)]
pub enum Internal {
    Ticket { app_id: String, ticket: Secret },
    Tenant { app_id: String, tenant_key: String },
}

/// The key of the record of `app_id`'s tenant `tenant_key`.
pub fn tenant_key(app_id: &str, tenant_key: &str) -> String {
    format!("{TENANT_KEY_PREFIX}{app_id}/{tenant_key}")
}

pub fn tenant_value(app_id: &str, tenant_key: &str, seen_at_ms: i64) -> Vec<u8> {
    let value = TenantValue {
        schema: TENANT_SCHEMA,
        app_id,
        tenant_key,
        seen_at_ms,
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A record read back; `None` for one this version does not know.
pub fn read(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Internal> {
    if let Some((app_id, ticket)) = read_ticket(key, value) {
        return Some(Internal::Ticket { app_id, ticket });
    }
    let key = std::str::from_utf8(key?).ok()?;
    let rest = key.strip_prefix(TENANT_KEY_PREFIX)?;
    let value: TenantValue = serde_json::from_slice(value?).ok()?;
    (value.schema == TENANT_SCHEMA
        && !value.tenant_key.is_empty()
        && rest == format!("{}/{}", value.app_id, value.tenant_key))
    .then(|| Internal::Tenant {
        app_id: value.app_id.to_owned(),
        tenant_key: value.tenant_key.to_owned(),
    })
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
        let (app, ticket_read) = read_ticket(Some(key.as_bytes()), Some(&value)).unwrap();
        assert_eq!((app.as_str(), ticket_read.expose()), ("cli_a", "t-1"));
        // Another app's key, another schema, garbage: skipped.
        assert!(read_ticket(Some(b"app_ticket/cli_b"), Some(&value)).is_none());
        assert!(read_ticket(Some(b"tenant/cli_a/t"), Some(&value)).is_none());
        assert!(read_ticket(Some(key.as_bytes()), Some(b"{}")).is_none());
        assert!(read_ticket(None, Some(&value)).is_none());
        assert!(read_ticket(Some(key.as_bytes()), None).is_none());
        let key = tenant_key("cli_a", "tk");
        let value = tenant_value("cli_a", "tk", 1);
        match read(Some(key.as_bytes()), Some(&value)) {
            Some(Internal::Tenant { app_id, tenant_key }) => {
                assert_eq!((app_id.as_str(), tenant_key.as_str()), ("cli_a", "tk"))
            }
            other => panic!("{other:?}"),
        }
        assert!(read(Some(b"tenant/cli_b/tk"), Some(&value)).is_none());
    }
}
