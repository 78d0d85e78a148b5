//! The self-built app's tenant access token, cached for every caller.
//!
//! Feishu hands it out with its lifetime (`expire`, seconds; two hours in
//! practice). It is renewed a margin before it runs out, so that no call
//! leaves with a token about to expire; a token Feishu rejects anyway
//! (revoked, or a clock that drifted) is dropped by [`TokenCache::forget`],
//! and the caller fetches a new one once and retries.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::secret::Secret;

/// Renewed this long before it expires (at most half its lifetime).
const MARGIN: Duration = Duration::from_secs(180);

struct Cached {
    token: Secret,
    renew_at: Instant,
}

#[derive(Default)]
pub struct TokenCache {
    /// A mutex held across the fetch: concurrent callers wait for one fetch
    /// instead of each asking Feishu for a token.
    cached: Mutex<Option<Cached>>,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` (token, lifetime).
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<Secret, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Duration), E>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
        let (token, lifetime) = fetch().await?;
        let margin = MARGIN.min(lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        });
        Ok(token)
    }

    /// Drops `token` if it is still the cached one (Feishu rejected it).
    pub async fn forget(&self, token: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == token) {
            *cached = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn cached_until_the_margin_then_renewed_and_forgotten_on_rejection() {
        let cache = TokenCache::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>((Secret::new(format!("t-{n}")), Duration::from_secs(7200)))
        };
        assert_eq!(cache.get(fetch).await.unwrap().expose(), "t-0");
        assert_eq!(cache.get(fetch).await.unwrap().expose(), "t-0");
        tokio::time::advance(Duration::from_secs(7200 - 181)).await;
        assert_eq!(cache.get(fetch).await.unwrap().expose(), "t-0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get(fetch).await.unwrap().expose(), "t-1");
        // A stale rejection does not drop the newer token.
        cache.forget(&Secret::new("t-0")).await;
        assert_eq!(cache.get(fetch).await.unwrap().expose(), "t-1");
        cache.forget(&Secret::new("t-1")).await;
        assert_eq!(cache.get(fetch).await.unwrap().expose(), "t-2");
    }
}
