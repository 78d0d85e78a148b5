//! Readiness: Kafka answers metadata for every topic the bridge may write
//! (member, dead-letter and raw topics), the dedup memory is
//! complete (the follower's warm start has read the topics back, or gave up
//! at its budget) and, when the long connection is the only ingress, the
//! connection to Feishu is up. (With both ingresses the webhook can take
//! events while the long connection reconnects, so it does not count.)

use std::sync::atomic::{AtomicBool, Ordering};

use crate::dedup::Dedup;

pub struct Readiness {
    kafka: AtomicBool,
    long_connection: AtomicBool,
    require_long_connection: bool,
    dedup: Dedup,
}

impl Readiness {
    pub fn new(require_long_connection: bool, dedup: Dedup) -> Self {
        Readiness {
            kafka: AtomicBool::new(false),
            long_connection: AtomicBool::new(false),
            require_long_connection,
            dedup,
        }
    }

    pub fn set_kafka(&self, ok: bool) {
        self.kafka.store(ok, Ordering::Relaxed);
    }

    pub fn set_long_connection(&self, up: bool) {
        self.long_connection.store(up, Ordering::Relaxed);
    }

    /// `None` when ready, else why not (served by `/readyz`).
    pub fn not_ready_because(&self) -> Option<&'static str> {
        if !self.kafka.load(Ordering::Relaxed) {
            Some("kafka does not answer metadata for every topic the bridge writes (member, dead-letter, raw)")
        } else if !self.dedup.is_complete() {
            Some("the dedup memory is being read back from Kafka (warm start)")
        } else if self.require_long_connection && !self.long_connection.load(Ordering::Relaxed) {
            Some("the long connection to Feishu is not established")
        } else {
            None
        }
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_because().is_none()
    }
}
