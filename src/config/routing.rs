//! Which events are published, and where: the member types normalized on
//! `KAFKA_TOPIC`, other types raw on `BRIDGE_RAW_TOPIC`.

use std::collections::BTreeSet;

use clap::Args;

use super::kafka::{validate_topic, KafkaConfig};
use super::{invalid, ConfigError};
use crate::record::MemberKind;
use crate::routing::{RawRoute, RawTypes, Routing};

/// Every member type: the README tells users to subscribe the app to all
/// five, so the default publishes all five (an event answered 200 and not
/// published is never sent again).
const DEFAULT_EVENT_TYPES: &str = "im.chat.member.user.added_v1,im.chat.member.user.deleted_v1,\
im.chat.member.user.withdrawn_v1,im.chat.member.bot.added_v1,im.chat.member.bot.deleted_v1";

#[derive(Debug, Args)]
#[command(next_help_heading = "Routing")]
pub struct RoutingArgs {
    /// Member event types published as normalized records on KAFKA_TOPIC,
    /// comma-separated: any of im.chat.member.user.added_v1,
    /// im.chat.member.user.deleted_v1, im.chat.member.user.withdrawn_v1,
    /// im.chat.member.bot.added_v1, im.chat.member.bot.deleted_v1.
    /// Default: all five (before 0.2.0, withdrawals only).
    #[arg(
        long = "event-types",
        env = "BRIDGE_EVENT_TYPES",
        value_delimiter = ',',
        default_value = DEFAULT_EVENT_TYPES
    )]
    pub event_types: Vec<String>,

    /// Other event types published raw (the decrypted envelope, token
    /// redacted) on BRIDGE_RAW_TOPIC, comma-separated, or `*` for every type
    /// not in BRIDGE_EVENT_TYPES. Empty: none.
    #[arg(
        long = "raw-event-types",
        env = "BRIDGE_RAW_EVENT_TYPES",
        value_delimiter = ','
    )]
    pub raw_event_types: Vec<String>,

    /// Topic of the raw records; may be KAFKA_TOPIC, for one stream in
    /// which a chat's member and raw records keep one order.
    #[arg(
        long = "raw-topic",
        env = "BRIDGE_RAW_TOPIC",
        default_value = "feishu.events.raw"
    )]
    pub raw_topic: String,
}

impl RoutingArgs {
    pub fn validate(&self, kafka: &KafkaConfig) -> Result<Routing, ConfigError> {
        let accepted = || {
            MemberKind::ALL
                .iter()
                .map(|k| k.event_type())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut members = BTreeSet::new();
        for name in entries(&self.event_types) {
            let Some(kind) = MemberKind::from_event_type(name) else {
                let hint = if looks_like_event_type(name) {
                    " (other types can be routed raw with BRIDGE_RAW_EVENT_TYPES)"
                } else {
                    ""
                };
                return Err(invalid(
                    "BRIDGE_EVENT_TYPES",
                    format!(
                        "{name:?} is not a member event type{hint}; accepted: {}",
                        accepted()
                    ),
                ));
            };
            members.insert(kind);
        }
        if members.is_empty() {
            return Err(invalid(
                "BRIDGE_EVENT_TYPES",
                format!("lists no event type; accepted: {}", accepted()),
            ));
        }

        validate_topic("BRIDGE_RAW_TOPIC", &self.raw_topic)?;
        let raw: Vec<&str> = entries(&self.raw_event_types).collect();
        let types = match raw.as_slice() {
            [] => return Ok(Routing::new(members, None)),
            ["*"] => RawTypes::AllOthers,
            _ => {
                let mut types = BTreeSet::new();
                for name in raw {
                    if name == "*" {
                        return Err(invalid(
                            "BRIDGE_RAW_EVENT_TYPES",
                            "`*` (every type not in BRIDGE_EVENT_TYPES) stands alone",
                        ));
                    }
                    if !looks_like_event_type(name) {
                        return Err(invalid(
                            "BRIDGE_RAW_EVENT_TYPES",
                            format!(
                                "{name:?} is not an event type (letters, digits, '.', '_', '-')"
                            ),
                        ));
                    }
                    if MemberKind::from_event_type(name).is_some_and(|k| members.contains(&k)) {
                        return Err(invalid(
                            "BRIDGE_RAW_EVENT_TYPES",
                            format!(
                                "{name} is also in BRIDGE_EVENT_TYPES: a type is published one way"
                            ),
                        ));
                    }
                    types.insert(name.to_owned());
                }
                RawTypes::Listed(types)
            }
        };
        // KAFKA_TOPIC is allowed: one topic then holds a chat's member and
        // raw records in one order (consumers dispatch on `schema`).
        if self.raw_topic == kafka.dlq_topic {
            return Err(invalid(
                "BRIDGE_RAW_TOPIC",
                format!(
                    "{} is also KAFKA_DLQ_TOPIC: dead letters need a topic of their own",
                    self.raw_topic
                ),
            ));
        }
        Ok(Routing::new(
            members,
            Some(RawRoute {
                types,
                topic: self.raw_topic.clone(),
            }),
        ))
    }
}

/// The non-blank entries of a comma-separated list, trimmed.
fn entries(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// Feishu's event types are dotted lower-case names (`im.message.receive_v1`);
/// this only keeps out what cannot be one (spaces, quotes, slashes).
fn looks_like_event_type(name: &str) -> bool {
    name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::super::validate_args;
    use super::*;

    #[test]
    fn member_types_are_the_five_and_a_typo_names_the_setting_and_the_choices() {
        let all = MemberKind::ALL.map(|k| k.event_type()).join(" , ");
        let cfg = validate_args(&["--event-types", &all]).expect("valid");
        assert_eq!(cfg.routing.members().count(), 5);
        for bad in [
            "im.chat.member.user.withdrawn_v2",
            "im.chat.member.user.added_v1,im.message.receive_v1",
            " , ",
        ] {
            let err = validate_args(&["--event-types", bad]).unwrap_err();
            assert_eq!(err.setting, "BRIDGE_EVENT_TYPES", "{bad}");
            let text = err.to_string();
            for kind in MemberKind::ALL {
                assert!(text.contains(kind.event_type()), "{text}");
            }
        }
        let err = validate_args(&["--event-types", "im.message.receive_v1"]).unwrap_err();
        assert!(err.to_string().contains("BRIDGE_RAW_EVENT_TYPES"), "{err}");
    }

    #[test]
    fn raw_types_are_listed_or_star_and_never_also_members() {
        let cfg = validate_args(&[
            "--raw-event-types",
            "im.message.receive_v1,contact.user.updated_v3",
        ])
        .expect("valid");
        let raw = cfg.routing.raw().expect("raw routing on");
        assert_eq!(raw.topic, "feishu.events.raw");
        assert_eq!(
            raw.types,
            RawTypes::Listed(
                [
                    "contact.user.updated_v3".to_owned(),
                    "im.message.receive_v1".to_owned()
                ]
                .into()
            )
        );
        let cfg = validate_args(&["--raw-event-types", "*", "--raw-topic", "r"]).expect("valid");
        assert_eq!(cfg.routing.raw().unwrap().types, RawTypes::AllOthers);
        assert_eq!(cfg.routing.raw_topic(), Some("r"));
        // A member type that is not normalized may go raw; one that is may not.
        validate_args(&[
            "--event-types",
            "im.chat.member.user.withdrawn_v1",
            "--raw-event-types",
            "im.chat.member.user.added_v1",
        ])
        .expect("valid");
        for (args, setting) in [
            (
                &["--raw-event-types", "*,im.message.receive_v1"][..],
                "BRIDGE_RAW_EVENT_TYPES",
            ),
            (
                &["--raw-event-types", "im.message receive"][..],
                "BRIDGE_RAW_EVENT_TYPES",
            ),
            (
                &["--raw-event-types", "im.chat.member.user.withdrawn_v1"][..],
                "BRIDGE_RAW_EVENT_TYPES",
            ),
            (
                &[
                    "--raw-event-types",
                    "*",
                    "--raw-topic",
                    "feishu.chat.members.dlq",
                ][..],
                "BRIDGE_RAW_TOPIC",
            ),
            (&["--raw-topic", "no topic"][..], "BRIDGE_RAW_TOPIC"),
        ] {
            assert_eq!(
                validate_args(args).unwrap_err().setting,
                setting,
                "{args:?}"
            );
        }
        // One topic for both is allowed.
        let cfg = validate_args(&[
            "--raw-event-types",
            "*",
            "--raw-topic",
            "feishu.chat.members",
        ])
        .expect("valid");
        assert_eq!(cfg.routing.raw_topic(), Some(cfg.topic.as_str()));
        // No raw types: no raw routing, whatever the topic.
        assert!(validate_args(&["--raw-event-types", ""])
            .unwrap()
            .routing
            .raw()
            .is_none());
    }
}
