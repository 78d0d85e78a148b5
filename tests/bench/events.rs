//! The events the benchmark drivers send: the five member types and one
//! raw type, shaped as Feishu sends them. Included by `soak.rs` and
//! `instructions.rs` with `#[path = "events.rs"] mod events;`.

use serde_json::{json, Value};

/// The member types and their share of the member events.
pub const MEMBER_TYPES: [(&str, f64); 5] = [
    ("im.chat.member.user.added_v1", 0.35),
    ("im.chat.member.user.deleted_v1", 0.25),
    ("im.chat.member.user.withdrawn_v1", 0.2),
    ("im.chat.member.bot.added_v1", 0.1),
    ("im.chat.member.bot.deleted_v1", 0.1),
];
pub const RAW_TYPE: &str = "im.message.receive_v1";

/// A version 2.0 envelope of `event_type` about chat number `chat`.
pub fn envelope(event_id: &str, event_type: &str, chat: usize, token: &str) -> Value {
    let header = json!({"event_id": event_id, "event_type": event_type, "create_time": "1608725989000",
        "token": token, "app_id": "cli_9f5343c580712544", "tenant_key": "2ca1d211f64f6438"});
    let chat_id = format!("oc_{chat:032x}");
    let event = if event_type == RAW_TYPE {
        json!({"sender": {"sender_id": {"open_id": "ou_84aad35d084aa403a838cf73ee18467"}, "sender_type": "user"},
               "message": {"message_id": format!("om_{event_id}"), "chat_id": chat_id, "chat_type": "group",
                           "message_type": "text", "content": "{\"text\":\"soak\"}"}})
    } else {
        json!({"chat_id": chat_id,
               "operator_id": {"union_id": "on_8ed6aa67826108097d9ee143816345", "user_id": "e33ggbyz", "open_id": "ou_84aad35d084aa403a838cf73ee18467"},
               "external": false, "operator_tenant_key": "879dsyud8",
               "users": [{"name": "用户 🎉", "tenant_key": "3774yuu3743",
                          "user_id": {"union_id": format!("on_{chat:030}"), "user_id": format!("u{chat:07}"), "open_id": format!("ou_{chat:031}")}}],
               "name": "群名称测试"})
    };
    json!({"schema": "2.0", "header": header, "event": event})
}
