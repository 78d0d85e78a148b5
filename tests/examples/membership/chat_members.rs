//! A chat's membership, rebuilt from the member topic alone: the part of
//! the `membership` example a downstream team would copy. Records of one
//! chat share a key, hence a partition, hence an order; applying them in
//! that order gives the chat's members and whether the app's bot is in it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

/// What the topic says of one chat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chat {
    /// Users in the chat, by `open_id` (else `union_id`, else `user_id`).
    pub members: BTreeSet<String>,
    /// Whether the app's bot is in the chat; `None` until a bot record.
    /// While it is out, Feishu sends the app no events of the chat, so
    /// `members` is as of the bot's removal.
    pub bot: Option<bool>,
    pub name: Option<String>,
}

/// Every chat seen on the member topic.
#[derive(Debug, Default)]
pub struct Membership {
    pub chats: BTreeMap<String, Chat>,
    /// `event_id`s applied: the bridge publishes an event once while it
    /// remembers it, but a consumer that re-reads a partition (a restart
    /// without committed offsets) should not apply a record twice.
    seen: HashSet<String>,
}

impl Membership {
    /// Applies one record's value; `Err` for a value that is not a member
    /// record (nothing is applied).
    pub fn apply(&mut self, record: &Value) -> Result<(), String> {
        let text = |field: &str| record.get(field).and_then(Value::as_str);
        let schema = text("schema").ok_or("no schema field")?;
        let chat_id = text("chat_id").ok_or("no chat_id")?;
        let event_id = text("event_id").ok_or("no event_id")?;
        enum Change {
            Join,
            Leave,
            Bot(bool),
        }
        let change = match schema {
            "feishu.chat_member_added.v1" => Change::Join,
            "feishu.chat_member_deleted.v1" | "feishu.chat_member_withdrawn.v1" => Change::Leave,
            "feishu.chat_bot_added.v1" => Change::Bot(true),
            "feishu.chat_bot_deleted.v1" => Change::Bot(false),
            other => return Err(format!("not a member record: {other}")),
        };
        if !self.seen.insert(event_id.to_owned()) {
            return Ok(());
        }
        let chat = self.chats.entry(chat_id.to_owned()).or_default();
        if let Some(name) = text("chat_name") {
            chat.name = Some(name.to_owned());
        }
        let users = record
            .get("users")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(user_key);
        match change {
            Change::Join => chat.members.extend(users),
            Change::Leave => {
                for user in users {
                    chat.members.remove(&user);
                }
            }
            Change::Bot(present) => chat.bot = Some(present),
        }
        Ok(())
    }
}

/// The id a user is known by: `open_id` is there for every app; the others
/// only with the matching permissions.
fn user_key(user: &Value) -> Option<String> {
    ["open_id", "union_id", "user_id"]
        .iter()
        .find_map(|k| user.get(k).and_then(Value::as_str))
        .map(str::to_owned)
}
