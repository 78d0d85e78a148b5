//! Whether the dedup memory may be behind the log: after Kafka could not
//! commit records for a while, records appended then (by any replica, whose
//! request Feishu saw fail) become visible only when the cluster commits
//! again. Until the follower has read the topics up to that point, an id
//! missing from the memory may still be on a topic, so claims are refused
//! as during the warm start.
//!
//! Three states: *caught up* (claims answered), *held* (Kafka cannot commit:
//! claims refused, nothing is enqueued) and *catching up* (Kafka commits
//! again; claims refused until the follower reports that it read every
//! partition to its high watermark). Each hold starts a new generation, so
//! a catch-up finished for an older hold does not open a newer one.

use std::sync::atomic::{AtomicU64, Ordering};

// The state and its generation share one word, so that every transition is
// one compare-and-swap: `generation << 2 | state`.
const CAUGHT_UP: u64 = 0;
const HELD: u64 = 1;
const CATCHING_UP: u64 = 2;
const STATE: u64 = 0b11;

/// The memory's position relative to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    CaughtUp,
    /// Kafka cannot commit records: claims wait.
    Held,
    /// Kafka commits again; the follower reads to the high watermark.
    CatchingUp,
}

#[derive(Default)]
pub(super) struct Behind {
    word: AtomicU64,
}

impl Behind {
    /// One atomic load: every claim asks.
    pub(super) fn is_behind(&self) -> bool {
        self.word.load(Ordering::Acquire) & STATE != CAUGHT_UP
    }

    pub(super) fn position(&self) -> Position {
        match self.word.load(Ordering::Acquire) & STATE {
            CAUGHT_UP => Position::CaughtUp,
            HELD => Position::Held,
            _ => Position::CatchingUp,
        }
    }

    /// Kafka cannot commit: true when this starts a hold (a new generation).
    pub(super) fn hold(&self) -> bool {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            if current & STATE == HELD {
                return false;
            }
            let next = ((current >> 2) + 1) << 2 | HELD;
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Kafka commits again: true when a hold turns into a catch-up.
    pub(super) fn catch_up(&self) -> bool {
        let current = self.word.load(Ordering::Acquire);
        current & STATE == HELD
            && self
                .word
                .compare_exchange(
                    current,
                    current & !STATE | CATCHING_UP,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// The generation the follower should catch up for, if one is wanted.
    pub(super) fn wanted(&self) -> Option<u64> {
        let current = self.word.load(Ordering::Acquire);
        (current & STATE == CATCHING_UP).then_some(current >> 2)
    }

    /// The follower read to the high watermark for `generation`: true when
    /// that opened the memory (no newer hold began meanwhile).
    pub(super) fn caught_up(&self, generation: u64) -> bool {
        self.word
            .compare_exchange(
                generation << 2 | CATCHING_UP,
                generation << 2 | CAUGHT_UP,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Opens the memory whatever its state: nothing can catch up (no
    /// follower reads the topics).
    pub(super) fn release(&self) -> bool {
        let current = self.word.load(Ordering::Acquire);
        current & STATE != CAUGHT_UP
            && self
                .word
                .compare_exchange(
                    current,
                    current & !STATE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_opens_only_after_the_catch_up_of_its_own_generation() {
        let b = Behind::default();
        assert!(!b.is_behind());
        assert!(b.hold());
        assert!(!b.hold(), "a second hold is the same hold");
        assert_eq!(b.position(), Position::Held);
        assert_eq!(b.wanted(), None, "no catch-up while Kafka cannot commit");
        assert!(b.catch_up());
        let first = b.wanted().unwrap();
        // Kafka fails again before the follower finished.
        assert!(b.hold());
        assert!(b.catch_up());
        let second = b.wanted().unwrap();
        assert_ne!(first, second);
        assert!(!b.caught_up(first), "an older catch-up does not open");
        assert!(b.is_behind());
        assert!(b.caught_up(second));
        assert!(!b.is_behind());
        assert_eq!(b.wanted(), None);
    }
}
