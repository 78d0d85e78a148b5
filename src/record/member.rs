//! The chat-member family, normalized: one record type per Feishu event
//! type, all with the same field names wherever Feishu sends the same field,
//! so that a consumer keeping a chat's membership reads one stream.
//!
//! The event bodies, as Feishu documents them and the official SDKs model
//! them (oapi-sdk-go `P2ChatMember*V1Data`, oapi-sdk-python
//! `P2ImChatMember*V1Data`, node-sdk's event templates), all agree:
//! `chat_id`, `operator_id` {`union_id`, `user_id`, `open_id`}, `external`,
//! `operator_tenant_key`, `name` (the chat's), `i18n_names` {`zh_cn`,
//! `en_us`, `ja_jp`}; the three user events add `users`, a list of
//! {`name`, `tenant_key`, `user_id` {…}}. The bot events name no bot: the
//! bot is the app that receives them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{InHeader, Meta, NormalizeError};
use crate::protocol::VerifiedEvent;

/// The five member event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberKind {
    /// Users joined the chat (invited, or by link or QR code).
    UserAdded,
    /// Users left the chat or were removed from it.
    UserDeleted,
    /// An invitation was withdrawn: the users it added are gone again.
    UserWithdrawn,
    /// The app's bot was added to the chat.
    BotAdded,
    /// The app's bot was removed from the chat.
    BotDeleted,
}

impl MemberKind {
    pub const ALL: [MemberKind; 5] = [
        MemberKind::UserAdded,
        MemberKind::UserDeleted,
        MemberKind::UserWithdrawn,
        MemberKind::BotAdded,
        MemberKind::BotDeleted,
    ];

    /// Feishu's event type (`header.event_type`).
    pub fn event_type(self) -> &'static str {
        match self {
            MemberKind::UserAdded => "im.chat.member.user.added_v1",
            MemberKind::UserDeleted => "im.chat.member.user.deleted_v1",
            MemberKind::UserWithdrawn => "im.chat.member.user.withdrawn_v1",
            MemberKind::BotAdded => "im.chat.member.bot.added_v1",
            MemberKind::BotDeleted => "im.chat.member.bot.deleted_v1",
        }
    }

    /// The record's `schema` field and header; its JSON Schema is
    /// `deploy/schema/<schema>.json`.
    pub fn schema(self) -> &'static str {
        match self {
            MemberKind::UserAdded => "feishu.chat_member_added.v1",
            MemberKind::UserDeleted => "feishu.chat_member_deleted.v1",
            // The first record type of the bridge: its name stays.
            MemberKind::UserWithdrawn => "feishu.chat_member_withdrawn.v1",
            MemberKind::BotAdded => "feishu.chat_bot_added.v1",
            MemberKind::BotDeleted => "feishu.chat_bot_deleted.v1",
        }
    }

    pub fn from_event_type(event_type: &str) -> Option<MemberKind> {
        MemberKind::ALL
            .into_iter()
            .find(|k| k.event_type() == event_type)
    }

    /// Whether the event names users (the bot events do not).
    pub fn has_users(self) -> bool {
        matches!(
            self,
            MemberKind::UserAdded | MemberKind::UserDeleted | MemberKind::UserWithdrawn
        )
    }
}

/// One member record. Keys are serialized in this order, every one always
/// present (`null` when Feishu did not send the field), except `users`,
/// which the bot records do not have: it is `Some` exactly for the kinds
/// whose events name users ([`MemberKind::has_users`]), which
/// [`normalize`], its only maker, ensures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRecord {
    pub schema: &'static str,
    /// `event_id`, `event_type`, `create_time_ms`, `tenant_key`, `app_id`.
    #[serde(flatten)]
    pub meta: Meta,
    pub chat_id: String,
    pub chat_name: Option<String>,
    pub chat_i18n_names: I18nNames,
    pub external: Option<bool>,
    pub operator: UserIds,
    pub operator_tenant_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User>>,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct I18nNames {
    pub zh_cn: Option<String>,
    pub en_us: Option<String>,
    pub ja_jp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserIds {
    pub open_id: Option<String>,
    pub union_id: Option<String>,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub name: Option<String>,
    pub tenant_key: Option<String>,
    pub open_id: Option<String>,
    pub union_id: Option<String>,
    pub user_id: Option<String>,
}

/// The event body as Feishu sends it, but for `users` (read only for the
/// user events: for the bot events it is an unknown field, and ignored).
#[derive(Deserialize)]
struct InEvent {
    chat_id: Option<String>,
    operator_id: Option<UserIds>,
    external: Option<bool>,
    operator_tenant_key: Option<String>,
    name: Option<String>,
    i18n_names: Option<I18nNames>,
}

#[derive(Deserialize)]
struct InUser {
    name: Option<String>,
    tenant_key: Option<String>,
    user_id: Option<UserIds>,
}

/// Builds the record of a verified v2 event of `kind`.
pub fn normalize(
    event: &VerifiedEvent,
    kind: MemberKind,
    received_at_ms: i64,
) -> Result<MemberRecord, NormalizeError> {
    let envelope = event.envelope();
    let null = Value::Null;
    let header = InHeader::deserialize(envelope.get("header").unwrap_or(&null)).map_err(|e| {
        NormalizeError::WrongType {
            part: "header",
            detail: e.to_string(),
        }
    })?;
    let body = match envelope.get("event") {
        Some(v @ Value::Object(_)) => v,
        _ => return Err(NormalizeError::MissingEvent),
    };
    let wrong_type = |e: serde_json::Error| NormalizeError::WrongType {
        part: "event",
        detail: e.to_string(),
    };
    let users = if kind.has_users() {
        let users = match body.get("users") {
            None | Some(Value::Null) => Vec::new(),
            Some(users) => Vec::<InUser>::deserialize(users).map_err(wrong_type)?,
        };
        Some(users.into_iter().map(User::from).collect())
    } else {
        None
    };
    let body = InEvent::deserialize(body).map_err(wrong_type)?;

    let event_id = header
        .event_id
        .filter(|s| !s.is_empty())
        .ok_or(NormalizeError::MissingEventId)?;
    let chat_id = body
        .chat_id
        .filter(|s| !s.is_empty())
        .ok_or(NormalizeError::MissingChatId)?;
    let create_time_ms = match header.create_time {
        None => None,
        Some(t) => Some(t.millis().ok_or(NormalizeError::BadCreateTime)?),
    };

    Ok(MemberRecord {
        schema: kind.schema(),
        meta: Meta {
            event_id,
            event_type: event.event_type().to_owned(),
            create_time_ms,
            tenant_key: header.tenant_key,
            app_id: header.app_id,
        },
        chat_id,
        chat_name: body.name,
        chat_i18n_names: body.i18n_names.unwrap_or_default(),
        external: body.external,
        operator: body.operator_id.unwrap_or_default(),
        operator_tenant_key: body.operator_tenant_key,
        users,
        received_at_ms,
    })
}

impl From<InUser> for User {
    fn from(u: InUser) -> Self {
        let ids = u.user_id.unwrap_or_default();
        User {
            name: u.name,
            tenant_key: u.tenant_key,
            open_id: ids.open_id,
            union_id: ids.union_id,
            user_id: ids.user_id,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
