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

use serde::Serialize;

use super::{Meta, NormalizeError};
use crate::protocol::envelope::{self, Scalar, Slot};
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

/// One member record, borrowed from its event. Keys are serialized in this
/// order, every one always present (`null` when Feishu did not send the
/// field), except `users`, which the bot records do not have: it is `Some`
/// exactly for the kinds whose events name users
/// ([`MemberKind::has_users`]), which [`normalize`], its only maker, ensures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRecord<'a> {
    pub schema: &'static str,
    /// `event_id`, `event_type`, `create_time_ms`, `tenant_key`, `app_id`.
    #[serde(flatten)]
    pub meta: Meta<'a>,
    pub chat_id: &'a str,
    pub chat_name: Option<&'a str>,
    pub chat_i18n_names: I18nNames<&'a str>,
    pub external: Option<bool>,
    pub operator: UserIds<&'a str>,
    pub operator_tenant_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User<&'a str>>>,
    pub received_at_ms: i64,
}

/// A chat's names by locale; `S` is `&str` in member records, `String`
/// where they are listed (snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct I18nNames<S = String> {
    pub zh_cn: Option<S>,
    pub en_us: Option<S>,
    pub ja_jp: Option<S>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UserIds<S = String> {
    pub open_id: Option<S>,
    pub union_id: Option<S>,
    pub user_id: Option<S>,
}

/// A user of a member record or a snapshot, in one shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User<S = String> {
    pub name: Option<S>,
    pub tenant_key: Option<S>,
    pub open_id: Option<S>,
    pub union_id: Option<S>,
    pub user_id: Option<S>,
}

/// Reads the fields of one part of the event strictly: a field Feishu
/// sends as a string (or an object, or a flag) must be one, or `null`, or
/// absent; anything else is [`NormalizeError::WrongType`], naming the field.
struct Strict<'a> {
    event: &'a VerifiedEvent,
    part: &'static str,
}

impl<'a> Strict<'a> {
    fn wrong(&self, field: &str, expected: &str) -> NormalizeError {
        NormalizeError::WrongType {
            part: self.part,
            detail: format!("{field} is not {expected}"),
        }
    }

    fn text(&self, value: &'a Scalar, field: &str) -> Result<Option<&'a str>, NormalizeError> {
        match value {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Text(t) => Ok(Some(self.event.str(t))),
            _ => Err(self.wrong(field, "a string")),
        }
    }

    fn flag(&self, value: &Scalar, field: &str) -> Result<Option<bool>, NormalizeError> {
        match value {
            Scalar::Absent | Scalar::Null => Ok(None),
            Scalar::Bool(b) => Ok(Some(*b)),
            _ => Err(self.wrong(field, "a boolean")),
        }
    }

    fn ids(
        &self,
        value: &'a Slot<envelope::Ids>,
        field: &str,
    ) -> Result<UserIds<&'a str>, NormalizeError> {
        match value {
            Slot::Absent | Slot::Null => Ok(UserIds::default()),
            Slot::Value(ids) => Ok(UserIds {
                open_id: self.text(&ids.open_id, field)?,
                union_id: self.text(&ids.union_id, field)?,
                user_id: self.text(&ids.user_id, field)?,
            }),
            Slot::Wrong => Err(self.wrong(field, "an object of string ids")),
        }
    }

    fn names(
        &self,
        value: &'a Slot<envelope::Names>,
    ) -> Result<I18nNames<&'a str>, NormalizeError> {
        match value {
            Slot::Absent | Slot::Null => Ok(I18nNames::default()),
            Slot::Value(names) => Ok(I18nNames {
                zh_cn: self.text(&names.zh_cn, "i18n_names")?,
                en_us: self.text(&names.en_us, "i18n_names")?,
                ja_jp: self.text(&names.ja_jp, "i18n_names")?,
            }),
            Slot::Wrong => Err(self.wrong("i18n_names", "an object of strings")),
        }
    }

    fn users(
        &self,
        value: &'a Slot<Vec<envelope::User>>,
    ) -> Result<Vec<User<&'a str>>, NormalizeError> {
        let users = match value {
            Slot::Absent | Slot::Null => return Ok(Vec::new()),
            Slot::Value(users) => users,
            Slot::Wrong => return Err(self.wrong("users", "a list of user objects")),
        };
        users
            .iter()
            .map(|u| {
                let ids = self.ids(&u.user_id, "users[].user_id")?;
                Ok(User {
                    name: self.text(&u.name, "users[].name")?,
                    tenant_key: self.text(&u.tenant_key, "users[].tenant_key")?,
                    open_id: ids.open_id,
                    union_id: ids.union_id,
                    user_id: ids.user_id,
                })
            })
            .collect()
    }
}

/// `header.create_time`, read strictly: Feishu sends a string of
/// milliseconds; a number is taken too.
enum CreateTime<'a> {
    Absent,
    Millis(i64),
    Text(&'a str),
}

/// Builds the record of a verified v2 event of `kind`, from what was read
/// of it: nothing is parsed again, and every string is borrowed.
pub fn normalize(
    event: &VerifiedEvent,
    kind: MemberKind,
    received_at_ms: i64,
) -> Result<MemberRecord<'_>, NormalizeError> {
    let header = event.header();
    let strict = Strict {
        event,
        part: "header",
    };
    if event.schema() != crate::protocol::Schema::V2 {
        return Err(strict.wrong("header", "an object"));
    }
    let event_id = strict.text(&header.event_id, "event_id")?;
    let create_time = match &header.create_time {
        Scalar::Absent | Scalar::Null => CreateTime::Absent,
        Scalar::Int(ms) => CreateTime::Millis(*ms),
        Scalar::Text(t) => CreateTime::Text(event.str(t)),
        _ => return Err(strict.wrong("create_time", "a string or an integer")),
    };
    let app_id = strict.text(&header.app_id, "app_id")?;
    let tenant_key = strict.text(&header.tenant_key, "tenant_key")?;

    let body = event.body().ok_or(NormalizeError::MissingEvent)?;
    let strict = Strict {
        event,
        part: "event",
    };
    let users = if kind.has_users() {
        Some(strict.users(&body.users)?)
    } else {
        // The bot events name no users: a `users` field there is unknown,
        // and ignored like any other.
        None
    };
    let chat_id = strict.text(&body.chat_id, "chat_id")?;
    let operator = strict.ids(&body.operator_id, "operator_id")?;
    let external = strict.flag(&body.external, "external")?;
    let operator_tenant_key = strict.text(&body.operator_tenant_key, "operator_tenant_key")?;
    let chat_name = strict.text(&body.name, "name")?;
    let chat_i18n_names = strict.names(&body.i18n_names)?;

    let event_id = event_id
        .filter(|s| !s.is_empty())
        .ok_or(NormalizeError::MissingEventId)?;
    let chat_id = chat_id
        .filter(|s| !s.is_empty())
        .ok_or(NormalizeError::MissingChatId)?;
    let create_time_ms = match create_time {
        CreateTime::Absent => None,
        CreateTime::Millis(ms) => Some(ms),
        CreateTime::Text(t) => Some(
            t.trim()
                .parse()
                .map_err(|_| NormalizeError::BadCreateTime)?,
        ),
    };

    Ok(MemberRecord {
        schema: kind.schema(),
        meta: Meta {
            event_id,
            event_type: event.event_type(),
            create_time_ms,
            tenant_key,
            app_id,
        },
        chat_id,
        chat_name,
        chat_i18n_names,
        external,
        operator,
        operator_tenant_key,
        users,
        received_at_ms,
    })
}

#[cfg(test)]
pub(crate) mod tests;
