//! Per-chat order for events handled concurrently.
//!
//! Records are keyed by `chat_id`, so Kafka keeps the order in which the
//! producer was handed them, per chat. Events of one long connection are
//! handled concurrently (each waits for its own ack), so without help a
//! later event of a chat could reach the producer first. Each event takes a
//! [`Turn`] in its key's line (its chat's, whatever its type: see
//! `routing::Routing::line_key`) when its frame (its last fragment)
//! arrives: it may hand its record to the producer only once the event
//! before it in that line has handed over its own, or has decided not to (a
//! duplicate, a failure, a deadline). Acks are still awaited concurrently:
//! the produce call is the ordering point, not the ack.

use std::collections::HashMap;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// An event's place in its chat's line.
#[derive(Debug, Default)]
pub struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// No line to keep (an HTTP callback: concurrent requests have no order).
    pub fn none() -> Self {
        Turn::default()
    }

    /// Waits until the event before this one has had its turn, or until
    /// `deadline`; false when the deadline came first.
    pub async fn wait(&mut self, deadline: Instant) -> bool {
        let Some(after) = self.after.as_mut() else {
            return true;
        };
        // A predecessor that went away without releasing released all the same.
        if tokio::time::timeout_at(deadline, after).await.is_ok() {
            self.after = None;
            true
        } else {
            false
        }
    }

    /// Lets the next event of the chat go: this one has been handed to the
    /// producer, or will not be. Also happens when the turn is dropped. A
    /// turn that gave up waiting passes its place on only once its own
    /// predecessor has gone, so the line never overtakes.
    pub fn release(&mut self) {
        let Some(done) = self.done.take() else {
            return;
        };
        match (self.after.take(), tokio::runtime::Handle::try_current()) {
            (Some(after), Ok(runtime)) => {
                runtime.spawn(async move {
                    let _ = after.await;
                    let _ = done.send(());
                });
            }
            _ => {
                let _ = done.send(());
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

/// The lines of one connection, by chat.
#[derive(Debug, Default)]
pub struct ChatLines {
    /// Per chat, what the last event to take a turn will release.
    last: HashMap<String, oneshot::Receiver<()>>,
}

/// Lines kept before released ones are swept out.
const SWEEP_ABOVE: usize = 1024;

impl ChatLines {
    /// The next turn in `chat`'s line, behind every turn taken before.
    pub fn take(&mut self, chat: &str) -> Turn {
        if self.last.len() > SWEEP_ABOVE {
            // Lines whose last event already went hold nobody back.
            self.last
                .retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (done, next) = oneshot::channel();
        let after = self.last.insert(chat.to_owned(), next);
        Turn {
            after,
            done: Some(done),
        }
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_turn_waits_for_the_one_before_it_in_its_chat_only() {
        let mut lines = ChatLines::default();
        let mut a1 = lines.take("a");
        let mut b1 = lines.take("b");
        let mut a2 = lines.take("a");
        let soon = || Instant::now() + Duration::from_millis(50);
        assert!(a1.wait(soon()).await, "first in line");
        assert!(b1.wait(soon()).await, "another chat");
        assert!(!a2.wait(soon()).await, "a1 has not released");
        let mut a3 = lines.take("a");
        // a2 gave up waiting; it still must not let a3 overtake a1.
        drop(a2);
        assert!(!a3.wait(soon()).await, "a3 overtook a1");
        a1.release();
        assert!(a3.wait(soon()).await);
        b1.release();
        a3.release();
    }

    #[tokio::test]
    async fn released_lines_are_swept() {
        let mut lines = ChatLines::default();
        for i in 0..=SWEEP_ABOVE {
            lines.take(&format!("c{i}")).release();
        }
        let _t = lines.take("new");
        assert_eq!(lines.len(), 1);
    }
}
