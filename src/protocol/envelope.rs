//! The plaintext envelope read once, from its bytes, into typed parts: the
//! envelope's own fields, its header, and its event body with the fields
//! that routing, keys and the member records need.
//!
//! Two choices make this cheap and safe to share:
//! * a string without escapes (nearly all of Feishu's) is kept as a span of
//!   the text ([`Text::Span`]), not copied; the text lives as long as the
//!   event, so every reader borrows from it;
//! * reading is lenient: a field of an unexpected type is recorded as such
//!   ([`Scalar::Other`], [`Slot::Wrong`]) instead of failing the whole
//!   envelope, because what is wrong for one form (a member record, which
//!   goes to the dead-letter topic for it) is carried as sent by another
//!   (the raw record). Each form decides what it requires.
//!
//! The spans of every `token` value (top level and header) are collected
//! while reading, so that the raw record and the dead letter can re-emit
//! the text with the credential replaced instead of re-serializing a tree.
//! A key given twice counts as JSON readers count it: the last one wins
//! (every copy of a token is redacted).

mod seeds;

use std::ops::Range;

use serde::de::DeserializeSeed;

/// A JSON string of the text: where it is (it has no escapes) or, unescaped,
/// a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Span(Range<usize>),
    Owned(Box<str>),
}

impl Text {
    /// The string, given the text it was read from.
    pub fn resolve<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            Text::Span(range) => text.get(range.clone()).unwrap_or_default(),
            Text::Owned(s) => s,
        }
    }
}

/// A field whose value the bridge reads as a string, a number or a flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scalar {
    /// The key is not there.
    #[default]
    Absent,
    Null,
    Text(Text),
    Int(i64),
    Bool(bool),
    /// Any other number, an object or an array.
    Other,
}

/// A field that is an object (or a list) the bridge reads into `T`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Slot<T> {
    #[default]
    Absent,
    Null,
    Value(T),
    /// Present, but not of the shape `T` reads (a string where an object
    /// belongs, a list with something other than objects, a field of the
    /// wrong type inside).
    Wrong,
}

/// `header` of a schema 2.0 envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub event_id: Scalar,
    pub event_type: Scalar,
    pub create_time: Scalar,
    pub tenant_key: Scalar,
    pub app_id: Scalar,
    pub token: Scalar,
}

/// `event`: the fields the bridge reads, whatever the event's type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// `type`: schema 1.0 events name their type here.
    pub kind: Scalar,
    /// `app_id` and `tenant_key`: schema 1.0 events carry them here (2.0
    /// events in the header).
    pub app_id: Scalar,
    pub tenant_key: Scalar,
    pub chat_id: Scalar,
    /// `message.chat_id` (message events), when `message` is an object.
    pub message_chat_id: Scalar,
    pub operator_id: Slot<Ids>,
    pub external: Scalar,
    pub operator_tenant_key: Scalar,
    pub name: Scalar,
    pub i18n_names: Slot<Names>,
    pub users: Slot<Vec<User>>,
}

/// A user's ids, as the member events send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub open_id: Scalar,
    pub union_id: Scalar,
    pub user_id: Scalar,
}

/// A chat's names by locale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub zh_cn: Scalar,
    pub en_us: Scalar,
    pub ja_jp: Scalar,
}

/// One entry of `users`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: Scalar,
    pub tenant_key: Scalar,
    pub user_id: Slot<Ids>,
}

/// The top level of a request body or of a decrypted envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `type`: `url_verification`, `event_callback` (schema 1.0).
    pub kind: Scalar,
    pub challenge: Scalar,
    pub token: Scalar,
    /// Schema 1.0's event id.
    pub uuid: Scalar,
    pub encrypt: Scalar,
    pub header: Slot<Header>,
    pub event: Slot<Body>,
    /// Where every `token` value is (top level and header), in text order.
    pub tokens: Vec<Range<usize>>,
}

/// Why a text is not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    NotJson,
    NotAnObject,
}

/// Reads `text`, which must be one JSON object and nothing else.
pub fn read(text: &str) -> Result<Envelope, ReadError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let envelope = seeds::TopSeed { base: text }
        .deserialize(&mut de)
        .map_err(|_| ReadError::NotJson)?;
    de.end().map_err(|_| ReadError::NotJson)?;
    envelope.ok_or(ReadError::NotAnObject)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(base: &'a str, s: &'a Scalar) -> Option<&'a str> {
        match s {
            Scalar::Text(t) => Some(t.resolve(base)),
            _ => None,
        }
    }

    #[test]
    fn strings_are_spans_unless_escaped_and_tokens_are_found_everywhere() {
        let t = r#"{"token":"a","header":{"event_id":"e\u0031","token":{"x":1},"create_time":"12","tenant_key":5},
            "event":{"chat_id":"oc_1","users":[{"name":"n","user_id":{"open_id":"ou"}}],"message":{"chat_id":"oc_2"},"x":[1,{"y":2}]}}"#;
        let env = read(t).unwrap();
        let Slot::Value(h) = &env.header else {
            panic!()
        };
        assert!(matches!(h.event_id, Scalar::Text(Text::Owned(_))));
        assert_eq!(text(t, &h.event_id), Some("e1"));
        assert!(matches!(h.create_time, Scalar::Text(Text::Span(_))));
        assert_eq!(h.tenant_key, Scalar::Int(5));
        assert_eq!(h.token, Scalar::Other);
        let found: Vec<&str> = env.tokens.iter().map(|r| &t[r.clone()]).collect();
        assert_eq!(found, [r#""a""#, r#"{"x":1}"#]);
        let Slot::Value(b) = &env.event else { panic!() };
        assert_eq!(text(t, &b.chat_id), Some("oc_1"));
        assert_eq!(text(t, &b.message_chat_id), Some("oc_2"));
        let Slot::Value(users) = &b.users else {
            panic!()
        };
        let Slot::Value(ids) = &users[0].user_id else {
            panic!()
        };
        assert_eq!(text(t, &ids.open_id), Some("ou"));
    }

    #[test]
    fn nesting_past_the_parsers_limit_is_not_json_even_where_unread() {
        let deep = |n: usize| format!("{{\"x\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(read(&deep(100)).is_ok());
        assert_eq!(read(&deep(5000)), Err(ReadError::NotJson));
        let deep_token = format!("{{\"token\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(read(&deep_token), Err(ReadError::NotJson));
    }

    #[test]
    fn only_one_object_is_an_envelope() {
        assert_eq!(read("[1]"), Err(ReadError::NotAnObject));
        assert_eq!(read("\"x\""), Err(ReadError::NotAnObject));
        assert_eq!(read("{} x"), Err(ReadError::NotJson));
        assert_eq!(read("{"), Err(ReadError::NotJson));
        assert!(read(" {} ").is_ok());
    }

    #[test]
    fn a_list_with_anything_but_users_is_wrong() {
        let env =
            read(r#"{"event":{"users":[{},null],"operator_id":"x","i18n_names":null}}"#).unwrap();
        let Slot::Value(b) = env.event else { panic!() };
        assert_eq!(b.users, Slot::Wrong);
        assert_eq!(b.operator_id, Slot::Wrong);
        assert_eq!(b.i18n_names, Slot::Null);
    }
}
