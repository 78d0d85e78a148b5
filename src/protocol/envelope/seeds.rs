//! How JSON becomes the envelope's typed parts: one serde visitor (a
//! "seed", which carries the text so that strings can be kept as spans of
//! it) per part, each lenient about types (module `envelope`), and a
//! `Skip` for what is not read that still keeps the parser's depth limit.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Body, Envelope, Header, Ids, Names, Scalar, Slot, Text, User};

/// Where `part`, a slice of `base`, is in it.
fn span(base: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= base.len()).then_some(start..end)
}

/// A value the bridge does not read. Skipped through the parser's own
/// recursion limit (128 levels), not `IgnoredAny`, which skips any depth:
/// JSON nested deeper than the limit is not an envelope, wherever it is.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        drain_map(map).map(|()| Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        drain_seq(seq).map(|()| Skip)
    }
}

/// Drains the rest of a map or a list that is not of the expected shape.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, Skip>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// A key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Implements `DeserializeSeed` for a seed whose visitor is itself.
macro_rules! seed_by_any {
    ($seed:ident, $value:ty) => {
        impl<'de> DeserializeSeed<'de> for $seed<'de> {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// Reads one [`Scalar`].
#[derive(Clone, Copy)]
struct ScalarSeed<'de> {
    base: &'de str,
}

seed_by_any!(ScalarSeed, Scalar);

impl<'de> Visitor<'de> for ScalarSeed<'de> {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar, E> {
        Ok(Scalar::Text(match span(self.base, v) {
            Some(range) => Text::Span(range),
            None => Text::Owned(v.into()),
        }))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(Text::Owned(v.into())))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(Text::Owned(v.into_boxed_str())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        drain_map(map)?;
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        drain_seq(seq)?;
        Ok(Scalar::Other)
    }
}

/// The visitor methods for every value that is neither an object nor a
/// list: `null` is [`Slot::Null`], anything else [`Slot::Wrong`].
macro_rules! not_a_container {
    ($t:ty) => {
        fn visit_unit<E>(self) -> Result<Slot<$t>, E> {
            Ok(Slot::Null)
        }
        fn visit_none<E>(self) -> Result<Slot<$t>, E> {
            Ok(Slot::Null)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Slot<$t>, E> {
            Ok(Slot::Wrong)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Slot<$t>, E> {
            Ok(Slot::Wrong)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Slot<$t>, E> {
            Ok(Slot::Wrong)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Slot<$t>, E> {
            Ok(Slot::Wrong)
        }
        fn visit_str<E>(self, _: &str) -> Result<Slot<$t>, E> {
            Ok(Slot::Wrong)
        }
    };
}

/// The visitor methods of an object-shaped seed for everything that is not
/// an object: `null` is [`Slot::Null`], anything else [`Slot::Wrong`].
macro_rules! not_an_object {
    ($t:ty) => {
        not_a_container!($t);
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Slot<$t>, A::Error> {
            drain_seq(seq)?;
            Ok(Slot::Wrong)
        }
    };
}

/// Reads a [`Slot<Ids>`].
#[derive(Clone, Copy)]
struct IdsSeed<'de> {
    base: &'de str,
}

seed_by_any!(IdsSeed, Slot<Ids>);

impl<'de> Visitor<'de> for IdsSeed<'de> {
    type Value = Slot<Ids>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of ids")
    }
    not_an_object!(Ids);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<Ids>, A::Error> {
        let s = ScalarSeed { base: self.base };
        let mut ids = Ids::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "open_id" => ids.open_id = map.next_value_seed(s)?,
                "union_id" => ids.union_id = map.next_value_seed(s)?,
                "user_id" => ids.user_id = map.next_value_seed(s)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Slot::Value(ids))
    }
}

/// Reads a [`Slot<Names>`].
#[derive(Clone, Copy)]
struct NamesSeed<'de> {
    base: &'de str,
}

seed_by_any!(NamesSeed, Slot<Names>);

impl<'de> Visitor<'de> for NamesSeed<'de> {
    type Value = Slot<Names>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of names")
    }
    not_an_object!(Names);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<Names>, A::Error> {
        let s = ScalarSeed { base: self.base };
        let mut names = Names::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "zh_cn" => names.zh_cn = map.next_value_seed(s)?,
                "en_us" => names.en_us = map.next_value_seed(s)?,
                "ja_jp" => names.ja_jp = map.next_value_seed(s)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Slot::Value(names))
    }
}

/// Reads one entry of `users`.
#[derive(Clone, Copy)]
struct UserSeed<'de> {
    base: &'de str,
}

seed_by_any!(UserSeed, Slot<User>);

impl<'de> Visitor<'de> for UserSeed<'de> {
    type Value = Slot<User>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a user")
    }
    not_an_object!(User);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<User>, A::Error> {
        let s = ScalarSeed { base: self.base };
        let mut user = User::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "name" => user.name = map.next_value_seed(s)?,
                "tenant_key" => user.tenant_key = map.next_value_seed(s)?,
                "user_id" => user.user_id = map.next_value_seed(IdsSeed { base: self.base })?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Slot::Value(user))
    }
}

/// Reads `users`: a list of user objects (a `null` entry, or any other,
/// makes the list [`Slot::Wrong`], as a typed reader would refuse it).
#[derive(Clone, Copy)]
struct UsersSeed<'de> {
    base: &'de str,
}

seed_by_any!(UsersSeed, Slot<Vec<User>>);

impl<'de> Visitor<'de> for UsersSeed<'de> {
    type Value = Slot<Vec<User>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of users")
    }
    not_a_container!(Vec<User>);
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot<Vec<User>>, A::Error> {
        drain_map(map)?;
        Ok(Slot::Wrong)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Slot<Vec<User>>, A::Error> {
        let mut users = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        let mut wrong = false;
        while let Some(user) = seq.next_element_seed(UserSeed { base: self.base })? {
            match user {
                Slot::Value(user) if !wrong => users.push(user),
                _ => wrong = true,
            }
        }
        Ok(if wrong {
            Slot::Wrong
        } else {
            Slot::Value(users)
        })
    }
}

/// Reads `message` for its `chat_id` (message events).
#[derive(Clone, Copy)]
struct MessageSeed<'de> {
    base: &'de str,
}

seed_by_any!(MessageSeed, Slot<Scalar>);

impl<'de> Visitor<'de> for MessageSeed<'de> {
    type Value = Slot<Scalar>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message")
    }
    not_an_object!(Scalar);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<Scalar>, A::Error> {
        let mut chat_id = Scalar::Absent;
        while let Some(Key(key)) = map.next_key()? {
            if key == "chat_id" {
                chat_id = map.next_value_seed(ScalarSeed { base: self.base })?;
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(Slot::Value(chat_id))
    }
}

/// Reads `event`.
#[derive(Clone, Copy)]
struct BodySeed<'de> {
    base: &'de str,
}

seed_by_any!(BodySeed, Slot<Body>);

impl<'de> Visitor<'de> for BodySeed<'de> {
    type Value = Slot<Body>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event body")
    }
    not_an_object!(Body);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<Body>, A::Error> {
        let base = self.base;
        let s = ScalarSeed { base };
        let mut body = Body::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "type" => body.kind = map.next_value_seed(s)?,
                "chat_id" => body.chat_id = map.next_value_seed(s)?,
                "app_id" => body.app_id = map.next_value_seed(s)?,
                "tenant_key" => body.tenant_key = map.next_value_seed(s)?,
                "message" => {
                    body.message_chat_id = match map.next_value_seed(MessageSeed { base })? {
                        Slot::Value(chat_id) => chat_id,
                        _ => Scalar::Absent,
                    }
                }
                "operator_id" => body.operator_id = map.next_value_seed(IdsSeed { base })?,
                "external" => body.external = map.next_value_seed(s)?,
                "operator_tenant_key" => body.operator_tenant_key = map.next_value_seed(s)?,
                "name" => body.name = map.next_value_seed(s)?,
                "i18n_names" => body.i18n_names = map.next_value_seed(NamesSeed { base })?,
                "users" => body.users = map.next_value_seed(UsersSeed { base })?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Slot::Value(body))
    }
}

/// A `token` value: where it is, and what it says when it is a string.
fn token<'de, A: MapAccess<'de>>(
    map: &mut A,
    base: &'de str,
    tokens: &mut Vec<Range<usize>>,
) -> Result<Scalar, A::Error> {
    let raw: &'de RawValue = map.next_value()?;
    let raw = raw.get();
    if let Some(range) = span(base, raw) {
        tokens.push(range);
    }
    if raw == "null" {
        return Ok(Scalar::Null);
    }
    // The value is a string exactly when it is quoted; a string is read
    // again only to unescape it, which a token practically never needs.
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(ScalarSeed { base }.visit_borrowed_str(inner)?),
        Some(_) => Ok(serde_json::from_str::<String>(raw)
            .map_or(Scalar::Other, |s| Scalar::Text(Text::Owned(s.into())))),
        None if raw.starts_with(['[', '{']) => {
            // Captured whole, past the depth limit `Skip` keeps elsewhere.
            serde_json::from_str::<Skip>(raw).map_err(serde::de::Error::custom)?;
            Ok(Scalar::Other)
        }
        None => Ok(Scalar::Other),
    }
}

/// Reads `header`; the spans of its `token` values go to `tokens`.
struct HeaderSeed<'de, 't> {
    base: &'de str,
    tokens: &'t mut Vec<Range<usize>>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'de, '_> {
    type Value = Slot<Header>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<Header>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'de, '_> {
    type Value = Slot<Header>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event header")
    }
    not_an_object!(Header);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<Header>, A::Error> {
        let base = self.base;
        let s = ScalarSeed { base };
        let mut header = Header::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "event_id" => header.event_id = map.next_value_seed(s)?,
                "event_type" => header.event_type = map.next_value_seed(s)?,
                "create_time" => header.create_time = map.next_value_seed(s)?,
                "tenant_key" => header.tenant_key = map.next_value_seed(s)?,
                "app_id" => header.app_id = map.next_value_seed(s)?,
                "token" => header.token = token(&mut map, base, self.tokens)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Slot::Value(header))
    }
}

/// Reads the top level: `Some` for an object, `None` for any other value.
pub(super) struct TopSeed<'de> {
    pub(super) base: &'de str,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'de> {
    type Value = Option<Envelope>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Envelope>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'de> {
    type Value = Option<Envelope>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event envelope")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Envelope>, A::Error> {
        let base = self.base;
        let s = ScalarSeed { base };
        let mut env = Envelope::default();
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "type" => env.kind = map.next_value_seed(s)?,
                "challenge" => env.challenge = map.next_value_seed(s)?,
                "token" => env.token = token(&mut map, base, &mut env.tokens)?,
                "uuid" => env.uuid = map.next_value_seed(s)?,
                "encrypt" => env.encrypt = map.next_value_seed(s)?,
                "header" => {
                    env.header = map.next_value_seed(HeaderSeed {
                        base,
                        tokens: &mut env.tokens,
                    })?
                }
                "event" => env.event = map.next_value_seed(BodySeed { base })?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Some(env))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Envelope>, A::Error> {
        drain_seq(seq)?;
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<Envelope>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<Envelope>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<Envelope>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<Envelope>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<Envelope>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<Envelope>, E> {
        Ok(None)
    }
}
