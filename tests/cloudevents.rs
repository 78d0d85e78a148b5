//! Records a CloudEvents consumer can read: a record and a dead letter,
//! published through the real binary to tansu, read back and parsed by the
//! official Python SDK's Kafka binding (an independent implementation).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SETTLE: Duration = Duration::from_millis(1000);

/// The SDK's reading of each record, in order.
fn read_with_python_sdk(records: &[Record]) -> Vec<Value> {
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cloudevents/read_binary.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    for r in records {
        let line = json!({
            "key": r.key,
            "headers": r.headers,
            "value": r.value.to_string(),
        });
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the CloudEvents SDK reader failed (pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_dead_letters_read_as_cloudevents() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "ce");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();

    let event = withdrawal("ce-1", "oc_ce");
    let mut dead = withdrawal("ce-2", "x");
    dead["event"].as_object_mut().unwrap().remove("chat_id");
    for env in [&event, &dead] {
        assert_eq!(feishu.push(&bridge, env).await.status, 200);
    }
    let records = read_topic(&broker.bootstrap, &topic, 1, SETTLE);
    let dead_letters = read_topic(&broker.bootstrap, &dlq, 1, SETTLE);
    assert_eq!((records.len(), dead_letters.len()), (1, 1));
    let (record, dead_letter) = (&records[0], &dead_letters[0]);

    let read = read_with_python_sdk(&[record.clone(), dead_letter.clone()]);
    assert_eq!(read.len(), 2, "{read:?}");

    // The record: every attribute, the key as partitionkey, the value as data.
    assert_eq!(
        read[0]["attributes"],
        json!({
            "specversion": "1.0",
            "id": "ce-1",
            "type": "im.chat.member.user.withdrawn_v1",
            "source": "/feishu/apps/cli_9f5343c580712544",
            // The seed's header.create_time, 1608725989000 ms.
            "time": "2020-12-23T12:19:49+00:00",
            "datacontenttype": "application/json",
            "partitionkey": "oc_ce",
        }),
        "{read:?}"
    );
    assert_eq!(read[0]["data"], record.value);
    // The bridge's own headers are still there, unchanged.
    for (k, v) in [
        ("event_id", "ce-1"),
        ("event_type", "im.chat.member.user.withdrawn_v1"),
        ("schema", "feishu.chat_member_withdrawn.v1"),
    ] {
        assert_eq!(record.headers[k], v);
    }

    // The dead letter: its own type; no key, so no partitionkey.
    assert_eq!(
        read[1]["attributes"],
        json!({
            "specversion": "1.0",
            "id": "ce-2",
            "type": "feishu.dead_letter.v2",
            "source": "/feishu/apps/cli_9f5343c580712544",
            "time": "2020-12-23T12:19:49+00:00",
            "datacontenttype": "application/json",
        }),
        "{read:?}"
    );
    assert_eq!(read[1]["data"], dead_letter.value);
    assert_eq!(dead_letter.headers["schema"], "feishu.dead_letter.v2");
}
