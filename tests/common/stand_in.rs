//! A stand-in for Feishu's push side. Each delivery is encrypted and signed
//! afresh per attempt; anything but 200 within 3 s is a failure and is
//! retried on a compressed version of Feishu's schedule (15 s, 5 min, 1 h,
//! 6 h become 0.3 s, 1 s, 2 s, 4 s). A ledger records every attempt, so a
//! scenario's verdict can compare what was acknowledged with the topic.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use super::{Feishu, Record};

/// Feishu gives up on an attempt after this long.
pub const FEISHU_TIMEOUT: Duration = Duration::from_secs(3);

/// Delays before each retry.
#[derive(Debug, Clone)]
pub struct Schedule(pub Vec<Duration>);

impl Schedule {
    /// Feishu's 15 s / 5 min / 1 h / 6 h, compressed.
    pub fn compressed() -> Self {
        Schedule(vec![
            Duration::from_millis(300),
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4),
        ])
    }
}

/// How one attempt ended, from the sender's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Status(u16),
    /// The connection was refused: the request never reached the bridge.
    Refused,
    /// No answer within Feishu's 3 s.
    TimedOut,
    /// The connection broke after the request was sent (reset, EOF).
    Broken(String),
}

#[derive(Debug, Default, Clone)]
pub struct Entry {
    pub attempts: Vec<(Attempt, Duration)>,
    pub acked: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Ledger {
    fn record(&self, id: &str, attempt: Attempt, took: Duration) {
        let mut map = self.entries.lock().unwrap();
        let e = map.entry(id.to_owned()).or_default();
        if attempt == Attempt::Status(200) {
            e.acked = true;
        }
        e.attempts.push((attempt, took));
    }

    pub fn snapshot(&self) -> HashMap<String, Entry> {
        self.entries.lock().unwrap().clone()
    }

    /// All attempts, flattened.
    pub fn attempts(&self) -> Vec<(Attempt, Duration)> {
        self.snapshot()
            .into_values()
            .flat_map(|e| e.attempts)
            .collect()
    }

    /// How many event_ids were acknowledged.
    pub fn acked(&self) -> usize {
        self.entries
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.acked)
            .count()
    }

    /// Reads `topic` back (blocking) and compares it with the ledger.
    pub fn verdict(&self, bootstrap: &str, topic: &str) -> Verdict {
        let records = super::read_topic(bootstrap, topic, self.acked(), Duration::from_secs(2));
        Verdict::new(self, &records)
    }

    /// [`Ledger::verdict`] read with a client configuration of its own.
    pub fn verdict_with(&self, config: &[(String, String)], topic: &str) -> Verdict {
        let records = super::read_topic_with(config, topic, self.acked(), Duration::from_secs(2));
        Verdict::new(self, &records)
    }

    pub fn count(&self, pred: impl Fn(&Attempt) -> bool) -> usize {
        self.attempts().iter().filter(|(a, _)| pred(a)).count()
    }
}

/// The stand-in itself.
#[derive(Clone)]
pub struct Pusher {
    pub url: Arc<Mutex<String>>,
    pub feishu: Arc<Feishu>,
    pub schedule: Schedule,
    pub ledger: Arc<Ledger>,
    pub client: reqwest::Client,
}

impl Pusher {
    pub fn new(url: String, schedule: Schedule) -> Self {
        Pusher {
            url: Arc::new(Mutex::new(url)),
            feishu: Arc::new(Feishu::new()),
            schedule,
            ledger: Arc::default(),
            // A fresh connection per attempt, as a fleet of senders behind a
            // load balancer would look; keep-alive reuse is covered elsewhere.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// Points later attempts at another address (e.g. a restarted bridge).
    pub fn retarget(&self, url: String) {
        *self.url.lock().unwrap() = url;
    }

    /// One attempt, recorded in the ledger.
    pub async fn attempt(&self, id: &str, envelope: &Value) -> Attempt {
        let (body, headers) = self.feishu.sign(envelope);
        let url = self.url.lock().unwrap().clone();
        let req = super::signed_post(&self.client, &url, body, &headers).timeout(FEISHU_TIMEOUT);
        let started = Instant::now();
        let attempt = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(_) => Attempt::Status(status),
                    Err(e) => Attempt::Broken(format!("body: {e}")),
                }
            }
            Err(e) if e.is_timeout() => Attempt::TimedOut,
            Err(e) if e.is_connect() => Attempt::Refused,
            Err(e) => Attempt::Broken(format!("{e:?}")),
        };
        self.ledger.record(id, attempt.clone(), started.elapsed());
        attempt
    }

    /// Delivers one event with retries; true when it was acknowledged.
    pub async fn deliver(&self, envelope: Value) -> bool {
        let id = envelope["header"]["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for delay in std::iter::once(None).chain(self.schedule.0.iter().map(Some)) {
            if let Some(d) = delay {
                tokio::time::sleep(*d).await;
            }
            if self.attempt(&id, &envelope).await == Attempt::Status(200) {
                return true;
            }
        }
        false
    }

    /// [`Pusher::run`] on a task of its own, for scenarios that break things meanwhile.
    pub fn spawn_run(
        &self,
        events: Vec<Value>,
        concurrency: usize,
        spacing: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run(events, concurrency, spacing).await })
    }

    /// Delivers `events` with at most `concurrency` in flight, starting one
    /// every `spacing`; returns when every delivery (and its retries) is over.
    pub async fn run(&self, events: Vec<Value>, concurrency: usize, spacing: Duration) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut tasks = Vec::new();
        for env in events {
            let permit = slots.clone().acquire_owned().await.unwrap();
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                me.deliver(env).await;
                drop(permit);
            }));
            if !spacing.is_zero() {
                tokio::time::sleep(spacing).await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

/// What a scenario found when it compared the ledger with the topic.
#[derive(Debug, Default)]
pub struct Verdict {
    pub sent: usize,
    pub acked: usize,
    /// Acknowledged but absent from the topic: lost.
    pub lost: Vec<String>,
    /// The ledger entries of the lost ids, for the failure message.
    pub lost_detail: Vec<(String, Entry)>,
    /// More than one record for an event_id.
    pub duplicated: Vec<(String, usize)>,
    /// Never acknowledged after every retry (reported, not necessarily a failure).
    pub unacked: Vec<String>,
    /// Records for ids the stand-in never sent.
    pub unexpected: Vec<String>,
}

impl Verdict {
    pub fn new(ledger: &Ledger, records: &[Record]) -> Verdict {
        let entries = ledger.snapshot();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in records {
            *counts
                .entry(r.value["event_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        let sent: HashSet<&String> = entries.keys().collect();
        let mut v = Verdict {
            sent: entries.len(),
            acked: entries.values().filter(|e| e.acked).count(),
            ..Verdict::default()
        };
        for (id, e) in &entries {
            let n = counts.get(id).copied().unwrap_or(0);
            if e.acked && n == 0 {
                v.lost.push(id.clone());
                v.lost_detail.push((id.clone(), e.clone()));
            }
            if !e.acked {
                v.unacked.push(id.clone());
            }
        }
        for (id, n) in &counts {
            if *n > 1 {
                v.duplicated.push((id.clone(), *n));
            }
            if !sent.contains(id) {
                v.unexpected.push(id.clone());
            }
        }
        v
    }

    pub fn summary(&self) -> String {
        format!(
            "sent {} acked {} lost {} duplicated {} unacked {} unexpected {}",
            self.sent,
            self.acked,
            self.lost.len(),
            self.duplicated.len(),
            self.unacked.len(),
            self.unexpected.len()
        )
    }

    /// The promise: everything acknowledged is present exactly once, nothing else.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.lost.is_empty(),
            "lost acknowledged events: {:?} ({})",
            self.lost_detail,
            self.summary()
        );
        assert!(
            self.duplicated.is_empty(),
            "duplicated: {:?} ({})",
            self.duplicated,
            self.summary()
        );
        assert!(
            self.unexpected.is_empty(),
            "unexpected: {:?} ({})",
            self.unexpected,
            self.summary()
        );
    }
}
