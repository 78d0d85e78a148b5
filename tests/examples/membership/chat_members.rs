//! A chat's membership, rebuilt from the member topic alone: the part of
//! the `membership` example a downstream team would copy. Records of one
//! chat share a key, hence a partition, hence an order; applying them in
//! that order gives the chat's members and whether the app's bot is in it.
//!
//! Changes and snapshots meet by time (docs/records.md, "Snapshots"): each
//! user carries the time of the last thing applied to them, a change's
//! `create_time_ms` (Feishu's clock) or a snapshot's `as_of_ms`. A change
//! applies when it is at least as new as what the user has; a snapshot
//! applies to a user only when it is newer. So a change made while a chat
//! was being listed, or one whose record comes after the snapshot's, is
//! neither lost nor undone by the snapshot, and an old retried event that
//! arrives after a snapshot changes nothing.
//!
//! A chat is seen through an app: each app's bot gets its own events of
//! it, with the app's own open_ids and event_ids, and its snapshots list
//! it in those open_ids. So a [`Membership`] is one app's view, and
//! [`Apps`] splits a stream that several apps' records share (one line per
//! chat, records of every app in it) by each record's `app_id`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

/// What the topic says of one chat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chat {
    /// Users in the chat, by `open_id` (else `union_id`, else `user_id`).
    pub members: BTreeSet<String>,
    /// Whether the app's bot is in the chat; `None` until a bot record or
    /// a snapshot. While it is out, Feishu sends the app no events of the
    /// chat, so `members` is as of the bot's removal.
    pub bot: Option<bool>,
    pub name: Option<String>,
}

/// Every chat seen on the member topic, through one app.
#[derive(Debug, Default)]
pub struct Membership {
    pub chats: BTreeMap<String, Chat>,
    /// The app whose view this is: the first record's `app_id`. A record
    /// of another app is refused (its open_ids and event_ids mean nothing
    /// here); one without `app_id` (a `v1` snapshot, written when a
    /// deployment served a single app) is taken as this app's.
    pub app_id: Option<String>,
    /// Per chat: per user, and for the bot (key `None`), the time of the
    /// last change applied (ms), present or not.
    clocks: HashMap<String, HashMap<Option<String>, i64>>,
    /// `event_id`s and `snapshot_id`s applied: the bridge publishes an event
    /// once while it remembers it, but a consumer that re-reads a partition
    /// (a restart without committed offsets) should not apply one twice.
    seen: HashSet<String>,
    /// Parts of snapshots whose last part has not arrived, by snapshot_id.
    pending: HashMap<String, Vec<Value>>,
}

enum Change {
    Join,
    Leave,
    Bot(bool),
}

impl Membership {
    /// Applies one record's value; `Err` for a value that is neither a
    /// member record nor a snapshot (nothing is applied).
    pub fn apply(&mut self, record: &Value) -> Result<(), String> {
        let text = |field: &str| record.get(field).and_then(Value::as_str);
        let schema = text("schema").ok_or("no schema field")?;
        let change = match schema {
            "feishu.chat_members_snapshot.v1" | "feishu.chat_members_snapshot.v2" => {
                self.admit(text("app_id"))?;
                return self.snapshot_part(record);
            }
            "feishu.chat_member_added.v1" => Change::Join,
            "feishu.chat_member_deleted.v1" | "feishu.chat_member_withdrawn.v1" => Change::Leave,
            "feishu.chat_bot_added.v1" => Change::Bot(true),
            "feishu.chat_bot_deleted.v1" => Change::Bot(false),
            other => return Err(format!("not a member record: {other}")),
        };
        self.admit(text("app_id"))?;
        let chat_id = text("chat_id").ok_or("no chat_id")?;
        let event_id = text("event_id").ok_or("no event_id")?;
        // When Feishu made the change; the bridge's receipt when it did not say.
        let at = record
            .get("create_time_ms")
            .and_then(Value::as_i64)
            .or_else(|| record.get("received_at_ms").and_then(Value::as_i64))
            .unwrap_or(i64::MIN);
        if !self.seen.insert(event_id.to_owned()) {
            return Ok(());
        }
        let chat = self.chats.entry(chat_id.to_owned()).or_default();
        let clocks = self.clocks.entry(chat_id.to_owned()).or_default();
        if let Some(name) = text("chat_name") {
            chat.name = Some(name.to_owned());
        }
        // At least as new as what the subject has: the change applies.
        let mut newer = |subject: Option<String>| {
            let last = clocks.entry(subject).or_insert(i64::MIN);
            let applies = at >= *last;
            if applies {
                *last = at;
            }
            applies
        };
        let users = record
            .get("users")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(user_key);
        match change {
            Change::Join => {
                for user in users {
                    if newer(Some(user.clone())) {
                        chat.members.insert(user);
                    }
                }
            }
            Change::Leave => {
                for user in users {
                    if newer(Some(user.clone())) {
                        chat.members.remove(&user);
                    }
                }
            }
            Change::Bot(present) => {
                if newer(None) {
                    chat.bot = Some(present);
                }
            }
        }
        Ok(())
    }

    /// Whether a record of `app` belongs to this view (see `app_id`).
    fn admit(&mut self, app: Option<&str>) -> Result<(), String> {
        match (app, &self.app_id) {
            (Some(app), None) => self.app_id = Some(app.to_owned()),
            (Some(app), Some(mine)) if mine != app => {
                return Err(format!(
                    "a record of app {app} in app {mine}'s view: split the stream by app (Apps)"
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// Keeps a snapshot's parts until its last one; then applies it whole.
    fn snapshot_part(&mut self, part: &Value) -> Result<(), String> {
        let id = part["snapshot_id"]
            .as_str()
            .ok_or("no snapshot_id")?
            .to_owned();
        if self.seen.contains(&id) {
            return Ok(());
        }
        let parts = self.pending.entry(id.clone()).or_default();
        parts.push(part.clone());
        if part["last"] != true {
            return Ok(());
        }
        let parts = self.pending.remove(&id).unwrap_or_default();
        let want = part["parts"].as_u64().unwrap_or(0) as usize;
        let numbered: BTreeSet<u64> = parts.iter().filter_map(|p| p["part"].as_u64()).collect();
        if parts.len() != want || numbered != (0..want as u64).collect() {
            // Parts of it were lost (a consumer that started in its middle):
            // not a whole snapshot, so nothing is applied.
            return Ok(());
        }
        self.seen.insert(id);
        let chat_id = part["chat_id"].as_str().ok_or("no chat_id")?.to_owned();
        let as_of = part["as_of_ms"].as_i64().ok_or("no as_of_ms")?;
        let listed: BTreeSet<String> = parts
            .iter()
            .flat_map(|p| p["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|u| user_key(&u))
            .collect();
        let chat = self.chats.entry(chat_id.clone()).or_default();
        let clocks = self.clocks.entry(chat_id).or_default();
        if let Some(name) = part["chat"]["name"].as_str() {
            chat.name = Some(name.to_owned());
        }
        // Newer than what the subject has: the snapshot's word applies.
        let mut older_than_snapshot = |subject: Option<String>| {
            let last = clocks.entry(subject).or_insert(i64::MIN);
            let applies = *last < as_of;
            if applies {
                *last = as_of;
            }
            applies
        };
        let known: Vec<String> = chat.members.iter().cloned().collect();
        for user in known {
            if !listed.contains(&user) && older_than_snapshot(Some(user.clone())) {
                chat.members.remove(&user);
            }
        }
        for user in listed {
            if older_than_snapshot(Some(user.clone())) {
                chat.members.insert(user);
            }
        }
        // The listing needs the bot in the chat.
        if older_than_snapshot(None) {
            chat.bot = Some(true);
        }
        Ok(())
    }
}

/// Every app's view of the chats, from one stream (`app_id` of each record).
#[derive(Debug, Default)]
pub struct Apps {
    /// By App ID; `""` holds records without one while no app is known.
    pub views: BTreeMap<String, Membership>,
}

impl Apps {
    pub fn apply(&mut self, record: &Value) -> Result<(), String> {
        let app = match record.get("app_id").and_then(Value::as_str) {
            Some(app) => app.to_owned(),
            // A v1 snapshot: its deployment served one app, the one seen.
            None if self.views.len() == 1 => self.views.keys().next().cloned().unwrap_or_default(),
            None => String::new(),
        };
        self.views.entry(app).or_default().apply(record)
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
