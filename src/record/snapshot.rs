//! The snapshot record: a chat's whole membership as Feishu's OpenAPI
//! listed it, on the member topic keyed by `chat_id`, so that it takes its
//! place in the chat's line between the changes (docs/records.md,
//! "Snapshots"; schema `deploy/schema/feishu.chat_members_snapshot.v2.json`).
//!
//! A large chat is split into parts that share one `snapshot_id`, numbered
//! from 0, the last one marked: a consumer applies a snapshot only when its
//! last part arrives, so one cut short (the process died, a publish
//! failed) changes nothing.

use serde::Serialize;

use super::User;

/// v2 added `app_id` and `tenant_key` (docs/records.md, "Upgrading").
pub const SNAPSHOT_SCHEMA: &str = "feishu.chat_members_snapshot.v2";

/// Whose view of the chat a snapshot is: the app whose OpenAPI listed it
/// (open_ids are per app) and the tenant whose token did, when known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Origin<'a> {
    pub app_id: Option<&'a str>,
    pub tenant_key: Option<&'a str>,
}

/// Members per part: a member is at most a few hundred bytes of JSON, so a
/// part stays well under Kafka's default 1 MB message size.
pub const MEMBERS_PER_PART: usize = 1000;

/// What started a snapshot (`trigger` field and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The bot was added to the chat (`im.chat.member.bot.added_v1`).
    BotAdded,
    /// `feishu-kafka-bridge snapshot`.
    Command,
    /// `POST /snapshot` on the admin port.
    Admin,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::BotAdded, Trigger::Command, Trigger::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::BotAdded => "bot_added",
            Trigger::Command => "command",
            Trigger::Admin => "admin",
        }
    }
}

/// One part, in the order its keys are serialized. `C` is the chat as the
/// chat listing gave it (the OpenAPI client's type: this module does not
/// depend on where a snapshot comes from).
#[derive(Debug, Serialize)]
pub struct SnapshotPart<'a, C: Serialize> {
    pub schema: &'static str,
    pub snapshot_id: &'a str,
    pub chat_id: &'a str,
    #[serde(flatten)]
    pub origin: Origin<'a>,
    /// When the listing began (ms since the epoch, the bridge's clock): the
    /// membership is as of this instant or later.
    pub as_of_ms: i64,
    pub trigger: Trigger,
    /// From 0.
    pub part: usize,
    pub parts: usize,
    pub last: bool,
    /// Members in the whole snapshot (every part).
    pub member_total: usize,
    /// The chat's fields as the chat listing gave them, when the snapshot
    /// came from it.
    pub chat: Option<&'a C>,
    /// This part's members, in the member records' user shape.
    pub members: &'a [User],
}

/// The parts of a snapshot of `members` (at least one, even for none).
pub fn parts<'a, C: Serialize>(
    snapshot_id: &'a str,
    chat_id: &'a str,
    origin: Origin<'a>,
    chat: Option<&'a C>,
    as_of_ms: i64,
    trigger: Trigger,
    members: &'a [User],
) -> Vec<SnapshotPart<'a, C>> {
    let chunks: Vec<&[User]> = if members.is_empty() {
        vec![&[]]
    } else {
        members.chunks(MEMBERS_PER_PART).collect()
    };
    let parts = chunks.len();
    let member_total = members.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(part, chunk)| SnapshotPart {
            schema: SNAPSHOT_SCHEMA,
            snapshot_id,
            chat_id,
            origin,
            as_of_ms,
            trigger,
            part,
            parts,
            last: part + 1 == parts,
            member_total,
            chat,
            members: chunk,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::im::Chat;

    fn users(n: usize) -> Vec<User> {
        (0..n)
            .map(|i| User {
                name: Some(format!(
                    "用户 {i} with a long display name to weigh the part"
                )),
                tenant_key: Some("2ca1d211f64f6438".into()),
                open_id: Some(format!("ou_{i:032x}")),
                union_id: None,
                user_id: None,
            })
            .collect()
    }

    #[test]
    fn a_large_chat_is_split_into_numbered_parts_well_under_a_megabyte() {
        let members = users(5000);
        let chat = Chat {
            chat_id: "oc_1".into(),
            name: Some("n".into()),
            ..Chat::default()
        };
        let parts = parts(
            "s-1",
            "oc_1",
            Origin {
                app_id: Some("cli_a"),
                tenant_key: Some("t1"),
            },
            Some(&chat),
            1_700_000_000_000,
            Trigger::Command,
            &members,
        );
        assert_eq!(parts.len(), 5);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!((p.part, p.parts, p.last), (i, 5, i == 4));
            assert_eq!(p.member_total, 5000);
            assert_eq!(p.origin.app_id, Some("cli_a"));
            let bytes = serde_json::to_vec(p).unwrap();
            assert!(bytes.len() < 512 * 1024, "{}", bytes.len());
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(
                crate::record::schema_validator(SNAPSHOT_SCHEMA).is_valid(&value),
                "{value}"
            );
        }
        let empty = super::parts::<Chat>(
            "s-2",
            "oc_2",
            Origin::default(),
            None,
            0,
            Trigger::Admin,
            &[],
        );
        assert_eq!(empty.len(), 1);
        let value = serde_json::to_value(&empty[0]).unwrap();
        assert!(value["app_id"].is_null() && value["tenant_key"].is_null());
        assert!(crate::record::schema_validator(SNAPSHOT_SCHEMA).is_valid(&value));
        assert!(empty[0].last && empty[0].members.is_empty() && empty[0].member_total == 0);
    }
}
