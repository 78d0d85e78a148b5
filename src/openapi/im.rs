//! The two listings a snapshot needs (oapi-sdk-go `service/im/v1`): the
//! chats the app's bot is in (`GET /open-apis/im/v1/chats`) and one chat's
//! members (`GET /open-apis/im/v1/chats/:chat_id/members`,
//! `member_id_type=open_id`), every page followed.

use serde::{Deserialize, Serialize};

use super::{api, ApiError, OpenApi, Page};

/// Largest page both listings accept.
const PAGE_SIZE: &str = "100";
/// A listing that keeps saying `has_more` past this many pages is cut off
/// as an error rather than followed forever (a 50,000-member chat is 500).
const MAX_PAGES: usize = 10_000;

/// A chat of `GET /open-apis/im/v1/chats` (ListChat). Fields Feishu adds
/// later are ignored; every one here may be absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    pub chat_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub owner_id: Option<String>,
    #[serde(default)]
    pub owner_id_type: Option<String>,
    #[serde(default)]
    pub external: Option<bool>,
    #[serde(default)]
    pub tenant_key: Option<String>,
    #[serde(default)]
    pub chat_status: Option<String>,
}

/// A member of `GET /open-apis/im/v1/chats/:chat_id/members` (ListMember).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Member {
    #[serde(default)]
    pub member_id_type: Option<String>,
    pub member_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tenant_key: Option<String>,
}

/// A chat's members, every page.
#[derive(Debug, Clone)]
pub struct Members {
    pub members: Vec<Member>,
    /// `member_total` as Feishu last said it, when it did.
    pub total: Option<u64>,
}

impl OpenApi {
    /// Every chat the app's bot is in (in `tenant`, for a store app).
    pub async fn list_chats(&self, tenant: Option<&str>) -> Result<Vec<Chat>, ApiError> {
        let mut chats = Vec::new();
        self.pages(
            tenant,
            api::LIST_CHATS,
            "/open-apis/im/v1/chats",
            &[],
            |page: Page<Chat>| {
                chats.extend(page.items.into_iter().filter(|c| !c.chat_id.is_empty()));
            },
        )
        .await?;
        Ok(chats)
    }

    /// Every member of `chat_id`, by `open_id` (a store app's chat is in
    /// `tenant`, whose token lists it).
    pub async fn list_members(
        &self,
        tenant: Option<&str>,
        chat_id: &str,
    ) -> Result<Members, ApiError> {
        if chat_id.is_empty()
            || !chat_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ApiError::Permanent {
                api: api::LIST_MEMBERS,
                code: 0,
                msg: "not a chat_id".into(),
            });
        }
        let mut members = Vec::new();
        let mut total = None;
        let path = format!("/open-apis/im/v1/chats/{chat_id}/members");
        self.pages(
            tenant,
            api::LIST_MEMBERS,
            &path,
            &[("member_id_type", "open_id")],
            |page: Page<Member>| {
                total = page.total.or(total);
                members.extend(page.items.into_iter().filter(|m| !m.member_id.is_empty()));
            },
        )
        .await?;
        Ok(Members { members, total })
    }

    /// Follows `page_token` while `has_more`, handing each page to `take`.
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        tenant: Option<&str>,
        api: &'static str,
        path: &str,
        query: &[(&str, &str)],
        mut take: impl FnMut(Page<T>),
    ) -> Result<(), ApiError> {
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("page_size", PAGE_SIZE));
            if let Some(t) = &token {
                q.push(("page_token", t));
            }
            let page: Page<T> = self.get(tenant, api, path, &q).await?;
            let next = page.page_token.clone().filter(|t| !t.is_empty());
            let more = page.has_more;
            take(page);
            match (more, next) {
                (true, Some(next)) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                (true, _) => {
                    return Err(ApiError::Retriable {
                        api,
                        detail: "has_more without a new page_token".into(),
                    })
                }
                (false, _) => return Ok(()),
            }
        }
        Err(ApiError::Permanent {
            api,
            code: 0,
            msg: format!("more than {MAX_PAGES} pages"),
        })
    }
}
