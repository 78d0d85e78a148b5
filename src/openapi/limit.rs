//! Pacing of the calls to Feishu's OpenAPI, shared by every caller in the
//! process:
//!
//! * a client-wide cap (`FEISHU_API_RATE_PER_SEC`): calls leave at most one
//!   per interval, so a reconcile of thousands of chats stays under
//!   Feishu's frequency limits instead of tripping them;
//! * a wait per API: when Feishu answers that an API's limit was hit, it
//!   says for how long (`x-ogw-ratelimit-reset`); the limit is per API, app
//!   and tenant, so the wait holds for every caller of that API here, not
//!   only for the one that was told.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Limiter {
    interval: Duration,
    /// When the next call may leave.
    next: Mutex<Instant>,
    /// Per API: no call before this instant.
    blocked: Mutex<HashMap<&'static str, Instant>>,
}

impl Limiter {
    /// At most `per_sec` calls a second (at least one).
    pub fn new(per_sec: u32) -> Self {
        Limiter {
            interval: Duration::from_secs(1) / per_sec.max(1),
            next: Mutex::new(Instant::now()),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a call to `api` may leave, and takes its slot.
    pub async fn acquire(&self, api: &'static str) {
        loop {
            let until = self.blocked_until(api);
            if until > Instant::now() {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let slot = {
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let slot = (*next).max(Instant::now());
                *next = slot + self.interval;
                slot
            };
            tokio::time::sleep_until(slot).await;
            // A wait may have started while this call waited for its slot.
            if self.blocked_until(api) <= Instant::now() {
                return;
            }
        }
    }

    /// Feishu said `api`'s limit was hit: no call to it for `wait`.
    pub fn block(&self, api: &'static str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let entry = blocked.entry(api).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn blocked_until(&self, api: &'static str) -> Instant {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .get(api)
            .copied()
            .unwrap_or_else(|| Instant::now() - Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_cap_across_callers() {
        let limiter = std::sync::Arc::new(Limiter::new(10));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire("a").await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - start);
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            assert!(*t >= Duration::from_millis(100) * i as u32, "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_holds_for_every_caller_of_that_api_only() {
        let limiter = Limiter::new(1000);
        limiter.block("members", Duration::from_secs(3));
        let start = Instant::now();
        limiter.acquire("chats").await;
        assert!(start.elapsed() < Duration::from_millis(10));
        limiter.acquire("members").await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }
}
