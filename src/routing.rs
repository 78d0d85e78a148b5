//! Which authentic events are published, and in which form: the member
//! family normalized on the member topic (`BRIDGE_EVENT_TYPES`), other
//! types raw on the raw topic (`BRIDGE_RAW_EVENT_TYPES`,
//! `BRIDGE_RAW_TOPIC`), and everything else acknowledged and counted, as
//! before routing existed.

use std::collections::BTreeSet;

use crate::protocol::{Schema, VerifiedEvent};
use crate::record::{self, MemberKind};

/// Where a routed event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Normalized, on the member topic (`KAFKA_TOPIC`).
    Member(MemberKind),
    /// As Feishu sent it, on the raw topic.
    Raw,
}

/// Why an authentic event is not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRouted {
    /// Its type is neither a member type listed in `BRIDGE_EVENT_TYPES`
    /// nor routed raw.
    Unlisted,
    /// A schema 1.0 event (`"type": "event_callback"`, no `header`): Feishu's
    /// legacy catalogue, which the raw form (the 2.0 envelope) does not
    /// cover; subscribe the app to the 2.0 types instead. The app lifecycle
    /// types ([`LIFECYCLE`]) exist only in 1.0 and are routed.
    Schema1,
    /// `app_ticket`: a store app's credential for its OpenAPI tokens, which
    /// Feishu pushes to the callback URL. Never published, whatever the
    /// routing says (`*` included): a topic is no place for a credential.
    AppTicket,
}

/// The event type of a store app's ticket.
pub const APP_TICKET: &str = "app_ticket";

/// An app's install lifecycle (a store app's tenants enabling, stopping or
/// removing it), sent only as schema 1.0 events: routed raw like any other
/// type, as their own record form (`record::raw::LIFECYCLE_SCHEMA`).
pub const LIFECYCLE: [&str; 3] = ["app_open", "app_status_change", "app_uninstalled"];

/// Which types go raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawTypes {
    Listed(BTreeSet<String>),
    /// `*`: every type that is not a member type of `BRIDGE_EVENT_TYPES`.
    AllOthers,
}

/// Raw routing: which types, and the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRoute {
    pub types: RawTypes,
    pub topic: String,
}

/// The routing table, checked at start-up (`config::RoutingArgs`): at least
/// one member type, and no type both normalized and raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    members: BTreeSet<MemberKind>,
    raw: Option<RawRoute>,
}

impl Routing {
    /// `members` must not be empty; a listed raw type must not be one of
    /// `members` (the configuration refuses both with a clear error).
    pub fn new(members: BTreeSet<MemberKind>, raw: Option<RawRoute>) -> Self {
        debug_assert!(!members.is_empty());
        Routing { members, raw }
    }

    /// The default (`BRIDGE_EVENT_TYPES` unset): every member type
    /// normalized, nothing raw.
    pub fn every_member_type() -> Self {
        Routing::new(MemberKind::ALL.into(), None)
    }

    pub fn route(&self, event: &VerifiedEvent) -> Result<Route, NotRouted> {
        // Feishu sends the ticket as a schema 1.0 event; whichever it is,
        // it is told apart first.
        if event.event_type() == APP_TICKET {
            return Err(NotRouted::AppTicket);
        }
        if event.schema() != Schema::V2 && !LIFECYCLE.contains(&event.event_type()) {
            return Err(NotRouted::Schema1);
        }
        let event_type = event.event_type();
        if let Some(kind) = MemberKind::from_event_type(event_type) {
            if self.members.contains(&kind) {
                return Ok(Route::Member(kind));
            }
        }
        match &self.raw {
            Some(RawRoute {
                types: RawTypes::AllOthers,
                ..
            }) => Ok(Route::Raw),
            Some(RawRoute {
                types: RawTypes::Listed(types),
                ..
            }) if types.contains(event_type) => Ok(Route::Raw),
            _ => Err(NotRouted::Unlisted),
        }
    }

    /// The member types published normalized, in a fixed order.
    pub fn members(&self) -> impl Iterator<Item = MemberKind> + '_ {
        self.members.iter().copied()
    }

    pub fn raw(&self) -> Option<&RawRoute> {
        self.raw.as_ref()
    }

    /// The raw topic, when raw routing is on.
    pub fn raw_topic(&self) -> Option<&str> {
        self.raw.as_ref().map(|r| r.topic.as_str())
    }

    /// The key of the line a routed event takes on the long connection:
    /// its record's key, so that per-chat order holds across types.
    /// `None` for events that are not published.
    pub fn line_key<'a>(&self, event: &'a VerifiedEvent) -> Option<&'a str> {
        match self.route(event).ok()? {
            Route::Member(_) => event.chat_id(),
            Route::Raw => record::raw::key(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str) -> VerifiedEvent {
        VerifiedEvent::for_tests(json!({"schema":"2.0","header":{"event_id":"e","event_type":event_type},"event":{"chat_id":"oc_1"}}))
            .unwrap()
    }

    #[test]
    fn members_first_then_raw_then_nothing() {
        let listed = Routing::new(
            [MemberKind::UserAdded, MemberKind::UserWithdrawn].into(),
            Some(RawRoute {
                types: RawTypes::Listed(["im.message.receive_v1".to_owned()].into()),
                topic: "raw".into(),
            }),
        );
        let r = |t| listed.route(&event(t));
        assert_eq!(
            r("im.chat.member.user.added_v1"),
            Ok(Route::Member(MemberKind::UserAdded))
        );
        assert_eq!(r("im.message.receive_v1"), Ok(Route::Raw));
        assert_eq!(r("im.chat.member.bot.added_v1"), Err(NotRouted::Unlisted));
        assert_eq!(r("contact.user.updated_v3"), Err(NotRouted::Unlisted));

        let all = Routing::new(
            [MemberKind::UserWithdrawn].into(),
            Some(RawRoute {
                types: RawTypes::AllOthers,
                topic: "raw".into(),
            }),
        );
        let r = |t| all.route(&event(t));
        // A store app's ticket never goes anywhere, even with `*`.
        assert_eq!(r("app_ticket"), Err(NotRouted::AppTicket));
        // A member type not listed goes raw with `*`.
        assert_eq!(r("im.chat.member.user.added_v1"), Ok(Route::Raw));
        assert_eq!(
            r("im.chat.member.user.withdrawn_v1"),
            Ok(Route::Member(MemberKind::UserWithdrawn))
        );
        let v1 = VerifiedEvent::for_tests(
            json!({"type":"event_callback","uuid":"u","event":{"type":"add_user_to_chat"}}),
        )
        .unwrap();
        assert_eq!(all.route(&v1), Err(NotRouted::Schema1));
        let ticket = VerifiedEvent::for_tests(
            json!({"type":"event_callback","uuid":"u","token":"t","event":{"type":"app_ticket","app_id":"cli_1","app_ticket":"secret-ticket"}}),
        )
        .unwrap();
        assert_eq!(all.route(&ticket), Err(NotRouted::AppTicket));
        // The app lifecycle exists only in 1.0: routed raw when asked for.
        let uninstalled = VerifiedEvent::for_tests(
            json!({"type":"event_callback","uuid":"u2","token":"t","event":{"type":"app_uninstalled","app_id":"cli_1","tenant_key":"tk"}}),
        )
        .unwrap();
        assert_eq!(all.route(&uninstalled), Ok(Route::Raw));
        assert_eq!(listed.route(&uninstalled), Err(NotRouted::Unlisted));
        assert_eq!(all.line_key(&uninstalled), Some("tk"));
        assert_eq!(
            (uninstalled.app_id(), uninstalled.tenant_key()),
            (Some("cli_1"), Some("tk"))
        );
    }

    #[test]
    fn the_default_publishes_every_member_type_and_nothing_raw() {
        let d = Routing::every_member_type();
        for kind in MemberKind::ALL {
            assert_eq!(d.route(&event(kind.event_type())), Ok(Route::Member(kind)));
        }
        assert_eq!(
            d.route(&event("im.message.receive_v1")),
            Err(NotRouted::Unlisted)
        );
        assert_eq!(d.raw_topic(), None);
    }

    #[test]
    fn lines_follow_the_record_key_across_types() {
        let all = Routing::new(
            MemberKind::ALL.into(),
            Some(RawRoute {
                types: RawTypes::AllOthers,
                topic: "raw".into(),
            }),
        );
        let message = VerifiedEvent::for_tests(json!({"schema":"2.0","header":{"event_id":"m","event_type":"im.message.receive_v1","tenant_key":"t"},"event":{"message":{"chat_id":"oc_1"}}})).unwrap();
        assert_eq!(all.line_key(&message), Some("oc_1"));
        assert_eq!(
            all.line_key(&event("im.chat.member.bot.added_v1")),
            Some("oc_1")
        );
        let contact = VerifiedEvent::for_tests(json!({"schema":"2.0","header":{"event_id":"c","event_type":"contact.user.updated_v3","tenant_key":"t"},"event":{"object":{}}})).unwrap();
        assert_eq!(all.line_key(&contact), Some("t"));
        assert_eq!(
            Routing::every_member_type().line_key(&contact),
            None,
            "not published, no line"
        );
    }
}
