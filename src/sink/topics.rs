//! Readiness's question to Kafka, asked of the cluster's metadata: does
//! every routed topic exist, is the bridge allowed to see it, does every
//! partition have a leader; and what the answer, with what the clients
//! have seen ([`KafkaHealth`]), says to an operator.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

use super::health::KafkaHealth;

/// Why a topic cannot be written. A topic is named with its role, as
/// ``the dead-letter topic "x.dlq"``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No metadata answer at all.
    NoAnswer(String),
    Missing(String),
    /// The ACLs deny the bridge's user Describe on the topic.
    Denied(String),
    NoLeader {
        topic: String,
        partition: i32,
    },
    Other {
        topic: String,
        error: String,
    },
}

/// Metadata's answer for the routed topics.
#[derive(Debug, Default)]
pub struct Answer {
    pub problems: Vec<Problem>,
    /// Partitions with fewer replicas in sync than assigned:
    /// (topic, partition, in sync, replicas).
    pub short: Vec<(String, i32, usize, usize)>,
}

/// Asks for each topic's metadata (blocking); `topics` are (role, name).
pub fn check<C: ClientContext>(
    client: &Client<C>,
    topics: &[(&str, &str)],
    timeout: Duration,
) -> Answer {
    let mut answer = Answer::default();
    for (role, topic) in topics {
        let named = format!("the {role} topic \"{topic}\"");
        let md = match client.fetch_metadata(Some(topic), timeout) {
            Ok(md) => md,
            Err(e) => {
                answer.problems.push(Problem::NoAnswer(describe(&e)));
                // The same answer for every topic: asking again says nothing new.
                return answer;
            }
        };
        let Some(t) = md.topics().iter().find(|t| t.name() == *topic) else {
            answer.problems.push(Problem::Missing(named));
            continue;
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                answer.problems.push(Problem::Missing(named));
                continue;
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                answer.problems.push(Problem::Denied(named));
                continue;
            }
            Some(code) => {
                answer.problems.push(Problem::Other {
                    topic: named,
                    error: format!("{code:?}"),
                });
                continue;
            }
        }
        if t.partitions().is_empty() {
            answer.problems.push(Problem::Missing(named.clone()));
        }
        for p in t.partitions() {
            let leaderless = p.leader() < 0
                || p.error()
                    .is_some_and(|e| e != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
            if leaderless {
                answer.problems.push(Problem::NoLeader {
                    topic: named.clone(),
                    partition: p.id(),
                });
            } else if p.isr().len() < p.replicas().len() {
                answer
                    .short
                    .push((topic.to_string(), p.id(), p.isr().len(), p.replicas().len()));
            }
        }
    }
    answer
}

fn describe(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code}"),
        None => e.to_string(),
    }
}

/// `Ok` when the bridge can write; else why not, most telling cause first.
pub fn verdict(
    answer: &Answer,
    min_insync: &HashMap<String, usize>,
    health: &KafkaHealth,
    stall: Duration,
) -> Result<(), String> {
    let principal = health.principal();
    let mut why = String::new();
    for problem in &answer.problems {
        if !why.is_empty() {
            why.push_str("; ");
        }
        match problem {
            Problem::NoAnswer(error) => {
                let _ = write!(why, "kafka does not answer metadata ({error})");
                if let Some(client) = health.recent_error() {
                    let _ = write!(why, ": {}", health.describe(&client));
                }
            }
            Problem::Missing(topic) => {
                let _ = write!(
                    why,
                    "topic \"{topic}\" does not exist (create it: the bridge does not)"
                );
            }
            Problem::Denied(topic) => {
                let _ = write!(
                    why,
                    "kafka denies Describe on {topic} to the bridge's user ({principal}): grant Describe, Read and Write on it (docs/kafka.md, ACLs)"
                );
            }
            Problem::NoLeader { topic, partition } => {
                let _ = write!(
                    why,
                    "partition {partition} of topic \"{topic}\" has no leader"
                );
            }
            Problem::Other { topic, error } => {
                let _ = write!(why, "kafka answers {error} for {topic}");
            }
        }
    }
    if !why.is_empty() {
        return Err(why);
    }
    let denied = health.denied_topics();
    if !denied.is_empty() {
        return Err(denied
            .iter()
            .map(|t| format!("kafka denies Write on {t} to the bridge's user ({principal}): grant Write on it (docs/kafka.md, ACLs)"))
            .collect::<Vec<_>>()
            .join("; "));
    }
    if let Some(Err(why)) = commits(answer, min_insync, health) {
        return Err(why);
    }
    if let Some((waiting, since)) = health.stalled(stall) {
        let _ = write!(
            why,
            "kafka has acknowledged no record for {:.1} s ({waiting} waiting)",
            since.as_secs_f64()
        );
        if !answer.short.is_empty() {
            let _ = write!(why, "; replicas in sync: {}", short(answer));
        }
        if let Some(client) = health.recent_error() {
            let _ = write!(why, "; {}", health.describe(&client));
        }
        return Err(why);
    }
    Ok(())
}

/// The partitions with replicas out of sync, as `t[p] 1 of 3`.
fn short(answer: &Answer) -> String {
    answer
        .short
        .iter()
        .map(|(t, p, isr, all)| format!("{t}[{p}] {isr} of {all}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether every partition of the written topics can commit records now;
/// `Err` says which cannot. `None` when metadata did not answer (nothing is
/// known). A partition cannot when fewer replicas are in sync than its
/// topic's `min.insync.replicas` (`min_insync`, when the cluster told it);
/// for a topic whose setting is unknown, a record that failed while
/// replicas are out of sync is the only sign. A partition without a leader
/// is not counted: it takes no record at all, and what its returning
/// leader may commit late is what it appended while the replicas in sync
/// were too few, which this already answers (holding claims there too
/// would only lengthen every leader election's 503s by the catch-up).
pub fn commits(
    answer: &Answer,
    min_insync: &HashMap<String, usize>,
    health: &KafkaHealth,
) -> Option<Result<(), String>> {
    if answer
        .problems
        .iter()
        .any(|p| matches!(p, Problem::NoAnswer(_)))
    {
        return None;
    }
    let mut cannot: Vec<String> = Vec::new();
    for (t, p, isr, all) in &answer.short {
        if let Some(min) = min_insync.get(t).filter(|min| isr < min) {
            cannot.push(format!(
                "{t}[{p}] {isr} of {all} in sync, fewer than its min.insync.replicas ({min})"
            ));
        }
    }
    if !cannot.is_empty() {
        return Some(Err(format!(
            "{}: kafka refuses writes with acks=all",
            cannot.join(", ")
        )));
    }
    let unknown_short = answer
        .short
        .iter()
        .any(|(t, ..)| !min_insync.contains_key(t));
    if unknown_short {
        // Between Feishu's retries no record may be waiting: while the last
        // one failed and the ISR is still short, the cluster still cannot
        // take records. (Not while the ISR is full: with no traffic, which
        // a replica out of the Service gets, nothing would clear it.)
        if let Some(error) = health.failing() {
            return Some(Err(format!(
                "the last record failed ({error}) and none was acknowledged since; replicas in sync: {}: fewer than the topic's min.insync.replicas refuses writes with acks=all",
                short(answer)
            )));
        }
    }
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Destination;
    use crate::sink::health::test_health as health;

    /// No topic's min.insync.replicas known.
    fn none() -> HashMap<String, usize> {
        HashMap::new()
    }

    #[test]
    fn fewer_in_sync_than_the_known_minimum_cannot_commit_with_or_without_a_failure() {
        let h = health();
        let min: HashMap<String, usize> = [("m".to_owned(), 2)].into();
        let one = Answer {
            problems: vec![],
            short: vec![("m".into(), 0, 1, 3)],
        };
        let why = commits(&one, &min, &h).unwrap().unwrap_err();
        assert!(
            why.contains("m[0] 1 of 3 in sync") && why.contains("min.insync.replicas (2)"),
            "{why}"
        );
        assert_eq!(verdict(&one, &min, &h, Duration::from_secs(5)), Err(why));
        // Two of three in sync: writes commit, even after a failed record.
        let two = Answer {
            problems: vec![],
            short: vec![("m".into(), 0, 2, 3)],
        };
        h.enqueued();
        h.settled(
            Destination::Record,
            Err(Some(&crate::publish_error::PublishError::Retriable {
                code: rdkafka::error::RDKafkaErrorCode::RequestTimedOut,
            })),
        );
        assert_eq!(commits(&two, &min, &h), Some(Ok(())));
        // Unknown minimum: the failed record with replicas out of sync is the sign.
        assert!(matches!(commits(&two, &none(), &h), Some(Err(_))));
        // No leader takes nothing (not a hold); no answer says nothing.
        let leaderless = Answer {
            problems: vec![Problem::NoLeader {
                topic: "the member topic \"m\"".into(),
                partition: 1,
            }],
            short: vec![],
        };
        h.enqueued();
        h.settled(Destination::Record, Ok(()));
        assert_eq!(commits(&leaderless, &min, &h), Some(Ok(())));
        let silent = Answer {
            problems: vec![Problem::NoAnswer("timed out".into())],
            short: vec![],
        };
        assert_eq!(commits(&silent, &min, &h), None);
    }

    #[test]
    fn a_denied_topic_names_the_topic_the_operation_and_the_user() {
        let answer = Answer {
            problems: vec![Problem::Denied("the member topic \"m\"".into())],
            short: vec![],
        };
        let why = verdict(&answer, &none(), &health(), Duration::from_secs(5)).unwrap_err();
        assert!(why.contains("Describe on the member topic \"m\""), "{why}");
        assert!(why.contains("user \"bridge\""), "{why}");
    }

    #[test]
    fn a_stall_with_replicas_out_of_sync_says_so() {
        let h = health();
        h.enqueued();
        let answer = Answer {
            problems: vec![],
            short: vec![("m".into(), 0, 1, 3)],
        };
        let why = verdict(&answer, &none(), &h, Duration::ZERO).unwrap_err();
        assert!(why.contains("acknowledged no record"), "{why}");
        assert!(why.contains("m[0] 1 of 3"), "{why}");
        h.settled(Destination::Record, Ok(()));
        assert_eq!(verdict(&answer, &none(), &h, Duration::ZERO), Ok(()));
    }

    #[test]
    fn a_failed_record_with_the_isr_short_is_not_ready_until_the_isr_is_full() {
        use crate::publish_error::PublishError;
        use rdkafka::error::RDKafkaErrorCode;
        let h = health();
        h.enqueued();
        let timed_out = PublishError::Retriable {
            code: RDKafkaErrorCode::MessageTimedOut,
        };
        h.settled(Destination::Record, Err(Some(&timed_out)));
        let short = Answer {
            problems: vec![],
            short: vec![("m".into(), 0, 1, 3)],
        };
        let why = verdict(&short, &none(), &h, Duration::from_secs(5)).unwrap_err();
        assert!(
            why.contains("last record failed") && why.contains("m[0] 1 of 3"),
            "{why}"
        );
        assert_eq!(
            verdict(&Answer::default(), &none(), &h, Duration::from_secs(5)),
            Ok(())
        );
    }
}
