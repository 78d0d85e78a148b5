//! Readiness: Kafka can take the bridge's records (it answers metadata for
//! every topic the bridge may write, member, dead-letter and raw, and takes
//! them: `sink::Sink::writable` says why not), the dedup memory is
//! complete (the follower's warm start has read the topics back, or gave up
//! at its budget) and, when the long connection is the only ingress, the
//! connection to Feishu is up. (With both ingresses the webhook can take
//! events while the long connection reconnects, so it does not count.)
//! A listed app's own long connection is a note, not a condition: the pod
//! keeps serving every other app's events while that one reconnects.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::dedup::{Dedup, Position};
use crate::tickets::Tickets;

/// Until the first answer from Kafka.
const KAFKA_NOT_ASKED: &str = "kafka has not been asked yet whether the topics can be written";

pub struct Readiness {
    /// Why Kafka cannot take the bridge's records; `None` when it can.
    kafka: Mutex<Option<String>>,
    long_connection: AtomicBool,
    require_long_connection: bool,
    dedup: Dedup,
    /// Store apps' tickets: one missing is said, not a reason to be unready
    /// (events keep publishing; only that app's OpenAPI calls wait).
    tickets: Mutex<Option<Tickets>>,
    /// Listed apps' long connections, by app name: whether each is up.
    listed_connections: Mutex<BTreeMap<String, bool>>,
}

impl Readiness {
    pub fn new(require_long_connection: bool, dedup: Dedup) -> Self {
        Readiness {
            kafka: Mutex::new(Some(KAFKA_NOT_ASKED.to_owned())),
            long_connection: AtomicBool::new(false),
            require_long_connection,
            dedup,
            tickets: Mutex::new(None),
            listed_connections: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn note_tickets(&self, tickets: Tickets) {
        *self.tickets.lock().unwrap_or_else(|e| e.into_inner()) = Some(tickets);
    }

    /// What `/readyz` adds to a ready answer: the store apps waiting for
    /// their app_ticket, and the listed apps whose long connection is down.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(tickets) = self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            notes.extend(tickets.waiting().into_iter().map(|app| {
                format!("store app {app} is waiting for its app_ticket: its snapshots wait, its events publish")
            }));
        }
        let connections = self
            .listed_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        notes.extend(connections.iter().filter(|(_, up)| !**up).map(|(app, _)| {
            format!(
                "the long connection of app {app} is not established: its events wait at Feishu"
            )
        }));
        notes
    }

    /// Kafka's state: `Ok`, or why records cannot be written.
    pub fn set_kafka(&self, state: Result<(), String>) {
        *self.kafka.lock().unwrap_or_else(|e| e.into_inner()) = state.err();
    }

    pub fn set_long_connection(&self, up: bool) {
        self.long_connection.store(up, Ordering::Relaxed);
    }

    /// A listed app's own long connection: up or not (down until first said).
    pub fn set_listed_long_connection(&self, app: &str, up: bool) {
        self.listed_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_owned(), up);
    }

    /// `None` when ready, else why not (served by `/readyz`).
    pub fn not_ready_because(&self) -> Option<Cow<'static, str>> {
        if let Some(why) = &*self.kafka.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Cow::Owned(format!(
                "kafka cannot take the bridge's records: {why}"
            )))
        } else if !self.dedup.is_complete() {
            Some("the dedup memory is being read back from Kafka (warm start)".into())
        } else if let Some(why) = behind(self.dedup.position()) {
            Some(why.into())
        } else if self.require_long_connection && !self.long_connection.load(Ordering::Relaxed) {
            Some("the long connection to Feishu is not established".into())
        } else {
            None
        }
    }

    /// The same question as [`Readiness::not_ready_because`], without
    /// writing the answer out.
    pub fn is_ready(&self) -> bool {
        self.kafka
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
            && self.dedup.is_complete()
            && self.dedup.position() == Position::CaughtUp
            && (!self.require_long_connection || self.long_connection.load(Ordering::Relaxed))
    }
}

/// Why claims wait although Kafka answers (crate::fence).
fn behind(position: Position) -> Option<&'static str> {
    match position {
        Position::CaughtUp => None,
        Position::Held => Some("kafka could not commit records; claims wait until it can"),
        Position::CatchingUp => Some(
            "the dedup memory is reading what kafka committed on its return (to the high watermark)",
        ),
    }
}
