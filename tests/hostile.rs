//! Hostile and broken input against the real binary and broker: every case
//! gets its documented status, nothing is published, the process survives,
//! and valid traffic sent at the same time lands exactly once.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::stand_in::{Pusher, Schedule, Verdict};
use common::*;
use feishu_kafka_bridge::protocol::EncryptKey;
use serde_json::{json, Value};

/// A request as raw bytes, so that lies about framing can be told.
struct Raw {
    name: &'static str,
    bytes: Vec<u8>,
    /// Expected status of the first response; None when the server must
    /// close the connection without answering.
    status: Option<u16>,
}

fn signed_headers(feishu: &Feishu, body: &[u8]) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = feishu.key.sign(&ts, "n", body);
    format!(
        "X-Lark-Request-Timestamp: {ts}\r\nX-Lark-Request-Nonce: n\r\nX-Lark-Signature: {sig}\r\n"
    )
}

fn post(path_host: &str, headers: &str, framing: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("POST /webhook/event HTTP/1.1\r\nHost: {path_host}\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}{framing}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

fn with_length(host: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    post(
        host,
        headers,
        &format!("Content-Length: {}\r\n", body.len()),
        body,
    )
}

/// Sends raw bytes and returns the status of the first response, or None
/// when the connection was closed without one.
fn exchange(addr: &str, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Encrypts arbitrary bytes as an `encrypt` body (any plaintext, any key).
fn encrypted_body(key: &EncryptKey, plaintext: &[u8]) -> Vec<u8> {
    json!({ "encrypt": key.encrypt(plaintext, rand::random()) })
        .to_string()
        .into_bytes()
}

/// Raw AES-CBC without padding: for "bad padding" plaintexts.
fn unpadded_body(plaintext_blocks: &[u8]) -> Vec<u8> {
    use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
    use base64::Engine;
    use sha2::Digest;
    let key: [u8; 32] = sha2::Sha256::digest(ENCRYPT_KEY.as_bytes()).into();
    let iv = [5u8; 16];
    let mut buf = plaintext_blocks.to_vec();
    let n = buf.len();
    let ct = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, n)
        .unwrap()
        .to_vec();
    let mut blob = iv.to_vec();
    blob.extend(ct);
    json!({ "encrypt": base64::engine::general_purpose::STANDARD.encode(blob) })
        .to_string()
        .into_bytes()
}

/// Every hostile request and the status it must get. `dead_letter` cases
/// are authentic but unnormalizable: 200 and one dead letter each.
fn cases(host: &str, feishu: &Feishu, limit: usize) -> (Vec<Raw>, usize) {
    let k = &feishu.key;
    let mut v = Vec::new();
    let mut add = |name, bytes, status| {
        v.push(Raw {
            name,
            bytes,
            status: Some(status),
        })
    };
    let signed = |body: Vec<u8>| with_length(host, &signed_headers(feishu, &body), &body);
    let sealed = |env: &Value| signed(encrypted_body(k, env.to_string().as_bytes()));

    add(
        "truncated json",
        signed(b"{\"encrypt\":\"abc".to_vec()),
        400,
    );
    add("invalid json", signed(b"{encrypt: 1}".to_vec()), 400);
    for body in ["\"text\"", "123", "null", "[]", "true", ""] {
        add(
            "json that is not an object",
            signed(body.as_bytes().to_vec()),
            400,
        );
    }
    add(
        "non-UTF-8 bytes",
        signed(b"{\"encrypt\":\"\xff\xfe\xfd\"}".to_vec()),
        400,
    );
    for enc in [json!(1), json!(null), json!({}), json!(["a"]), json!(true)] {
        add(
            "encrypt of a wrong type",
            signed(json!({ "encrypt": enc }).to_string().into_bytes()),
            400,
        );
    }
    // With a token configured, an envelope whose token cannot be read is unauthenticated.
    add(
        "header not an object",
        sealed(&json!({"schema":"2.0","header":"x","event":{}})),
        401,
    );
    add(
        "header.event_type not a string",
        sealed(&json!({"schema":"2.0","header":{"event_type":7,"token":TOKEN},"event":{}})),
        400,
    );
    add(
        "header.token of a wrong type",
        sealed(
            &json!({"schema":"2.0","header":{"event_type":"im.chat.member.user.withdrawn_v1","token":[TOKEN]},"event":{}}),
        ),
        401,
    );
    add(
        "challenge not a string",
        sealed(&json!({"type":"url_verification","token":TOKEN,"challenge":{"a":1}})),
        400,
    );
    add(
        "not a feishu envelope",
        sealed(&json!({"token":TOKEN,"hello":"world"})),
        400,
    );
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    add(
        "deeply nested json (outer)",
        signed(format!("{{\"encrypt\":{deep}}}").into_bytes()),
        400,
    );
    add(
        "deeply nested json (encrypted)",
        signed(encrypted_body(k, format!("{{\"a\":{deep}}}").as_bytes())),
        400,
    );
    add(
        "huge json over the limit",
        signed(format!("{{\"encrypt\":\"{}\"}}", "A".repeat(limit)).into_bytes()),
        413,
    );
    add(
        "bad base64",
        signed(br#"{"encrypt":"not*base64!"}"#.to_vec()),
        400,
    );
    add(
        "ciphertext of a wrong length",
        signed(br#"{"encrypt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.to_vec()),
        400,
    );
    add(
        "wrong key",
        signed(encrypted_body(
            &EncryptKey::new("a different key"),
            withdrawal("h-wk", "oc_h").to_string().as_bytes(),
        )),
        400,
    );
    add("bad padding", signed(unpadded_body(&[b'x'; 32])), 400);

    let good = encrypted_body(k, withdrawal("h-never", "oc_h").to_string().as_bytes());
    let other = encrypted_body(k, withdrawal("h-other", "oc_h").to_string().as_bytes());
    add(
        "valid signature over a different body",
        with_length(host, &signed_headers(feishu, &other), &good),
        401,
    );
    let old_sig = k.sign("1600000000", "n", &good);
    add(
        "replayed old timestamp",
        with_length(host, &format!("X-Lark-Request-Timestamp: 1600000000\r\nX-Lark-Request-Nonce: n\r\nX-Lark-Signature: {old_sig}\r\n"), &good),
        401,
    );
    add(
        "missing signature headers",
        with_length(host, "", &good),
        401,
    );
    add(
        "signature without nonce",
        with_length(
            host,
            "X-Lark-Request-Timestamp: 1\r\nX-Lark-Signature: 00\r\n",
            &good,
        ),
        401,
    );
    let mut wrong_token = withdrawal("h-wt", "oc_h");
    wrong_token["header"]["token"] = "guessed".into();
    add("wrong token", sealed(&wrong_token), 401);
    add(
        "plaintext body",
        signed(withdrawal("h-pt", "oc_h").to_string().into_bytes()),
        400,
    );

    // Framing lies.
    add(
        "content-length over the limit",
        post(
            host,
            "",
            &format!("Content-Length: {}\r\n", limit + 1),
            b"{}",
        ),
        413,
    );
    let big = vec![b' '; limit + 10];
    add(
        "chunked body over the limit",
        post(host, "", "Transfer-Encoding: chunked\r\n", &chunked(&big)),
        413,
    );
    let lying = with_length(host, "", b"{\"encrypt\"");
    let mut lying = lying;
    lying.extend_from_slice(b":\"the rest of a body the length did not announce\"}");
    // Only the announced bytes are the body (truncated JSON); the rest is
    // never read as part of it. Unsigned, so refused with the one answer
    // every unsigned non-challenge gets.
    add("content-length shorter than the body", lying, 401);

    // Authentic but not normalizable: dead letters, not records.
    let mut dl = 0;
    let mut id_num = withdrawal("x", "oc_h");
    id_num["header"]["event_id"] = json!(12345);
    add("header.event_id not a string", sealed(&id_num), 200);
    dl += 1;
    let mut ct = withdrawal("h-ct", "oc_h");
    ct["header"]["create_time"] = json!({"ms": 1});
    add("header.create_time of a wrong type", sealed(&ct), 200);
    dl += 1;
    let mut ev = withdrawal("h-ev", "oc_h");
    ev["event"] = json!([1, 2]);
    add("event not an object", sealed(&ev), 200);
    dl += 1;
    for (field, bad) in [
        ("chat_id", json!(5)),
        ("external", json!("no")),
        ("users", json!("all")),
        ("operator_id", json!(3)),
        ("i18n_names", json!([])),
    ] {
        let mut e = withdrawal(&format!("h-{field}"), "oc_h");
        e["event"][field] = bad;
        add("event field of a wrong type", sealed(&e), 200);
        dl += 1;
    }
    (v, dl)
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(4096) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_mixed_with_valid_traffic() {
    let broker = Broker::shared();
    let (topic, dlq) = topics(broker, "hostile");
    let limit = 64 * 1024;
    let limit_s = limit.to_string();
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[("BRIDGE_BODY_LIMIT_BYTES", limit_s.as_str())],
    );
    let feishu = Feishu::new();
    let (cases, dead_letters) = cases(&bridge.addr, &feishu, limit);

    // Valid events flow while the hostile requests are sent, three rounds each.
    let pusher = Pusher::new(bridge.url("/webhook/event"), Schedule::compressed());
    let valid: Vec<Value> = (0..100)
        .map(|i| withdrawal(&format!("valid-{i}"), &format!("oc_v{}", i % 7)))
        .collect();
    let run = pusher.spawn_run(valid, 4, Duration::from_millis(10));
    let addr = bridge.addr.clone();
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for round in 0..3 {
            for c in &cases {
                out.push((round, c.name, c.status, exchange(&addr, &c.bytes)));
            }
        }
        out
    })
    .await
    .unwrap();
    run.await.unwrap();

    let wrong: Vec<_> = results
        .iter()
        .filter(|(_, _, want, got)| want != got)
        .collect();
    assert!(
        wrong.is_empty(),
        "unexpected answers (round, case, expected, got): {wrong:#?}"
    );

    let records = read_topic(
        &broker.bootstrap,
        &topic,
        pusher.ledger.acked(),
        Duration::from_secs(2),
    );
    let v = Verdict::new(&pusher.ledger, &records);
    println!(
        "hostile mix ({} hostile requests): {}",
        results.len(),
        v.summary()
    );
    v.assert_exactly_once();
    assert_eq!(v.acked, 100);
    assert!(records
        .iter()
        .all(|r| r.value["event_id"].as_str().unwrap().starts_with("valid-")));

    // Dead letters: one per authentic-but-broken event_id (the retries of
    // the same id are duplicates), plus one per round for the case without
    // a usable event_id, which cannot be deduplicated.
    let dead = read_topic(
        &broker.bootstrap,
        &dlq,
        dead_letters + 2,
        Duration::from_secs(1),
    );
    assert_eq!(
        dead.len(),
        dead_letters + 2,
        "dead letters: {:?}",
        dead.iter().map(|d| &d.value["reason"]).collect::<Vec<_>>()
    );

    assert_eq!(
        reqwest::get(bridge.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let logs = bridge.log_text();
    assert!(!logs.contains("panicked"), "a handler panicked");
    assert!(
        !logs.contains(ENCRYPT_KEY) && !logs.contains(TOKEN),
        "a secret reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_event_id_with_a_different_payload_is_a_duplicate() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "reuse");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();
    assert_eq!(
        feishu
            .push(&bridge, &withdrawal("same-id", "oc_first"))
            .await
            .status,
        200
    );
    let second = feishu
        .push(&bridge, &withdrawal("same-id", "oc_second"))
        .await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (200, r#"{"msg":"success"}"#)
    );
    let records = read_topic(&broker.bootstrap, &topic, 1, Duration::from_millis(1500));
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].value["chat_id"], "oc_first",
        "the first payload wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_reclaimed_and_do_not_block_valid_traffic() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "slow");
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[
            ("BRIDGE_HEADER_TIMEOUT_MS", "1000"),
            ("BRIDGE_BODY_TIMEOUT_MS", "1000"),
        ],
    );
    let addr = bridge.addr.clone();

    // Thousands of idle connections.
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // A client trickling its headers, one byte every 200 ms.
    let trickle_headers = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            let started = Instant::now();
            for b in b"POST /webhook/event HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" {
                if s.write_all(&[*b]).is_err() {
                    return started.elapsed();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Duration::MAX
        })
    };
    // A client trickling its body.
    let trickle_body = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"POST /webhook/event HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            (
                started.elapsed(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            )
        })
    };

    // Valid traffic is unaffected meanwhile.
    let feishu = Feishu::new();
    let started = Instant::now();
    let r = feishu
        .push(&bridge, &withdrawal("slow-valid", "oc_s"))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "valid request took {:?}",
        started.elapsed()
    );

    let (took, answer) = tokio::task::spawn_blocking(move || trickle_body.join().unwrap())
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "slow body got {answer:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "slow body answered after {took:?}"
    );
    let cut = tokio::task::spawn_blocking(move || trickle_headers.join().unwrap())
        .await
        .unwrap();
    assert!(
        cut < Duration::from_secs(4),
        "trickled headers kept the connection for {cut:?}"
    );

    // The idle connections were closed by the server (EOF on read).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let closed = tokio::task::spawn_blocking(move || {
        idle.into_iter()
            .filter(|s| {
                let mut s = s;
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut b = [0u8; 1];
                match s.read(&mut b) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 2000, "idle connections still open");
    assert_eq!(
        read_topic(&broker.bootstrap, &topic, 1, Duration::from_millis(500)).len(),
        1
    );
}

/// No decryption oracle: with an encrypt key, unsigned variants of one
/// captured ciphertext all get the same status and body (and no sooner than
/// the floor), whatever decryption found; a valid unsigned challenge still
/// gets its 200; the log and the metric keep the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_variants_of_a_ciphertext_all_get_one_answer() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "oracle");
    let bridge = Bridge::start(&broker.bootstrap, &topic, &[]);
    let feishu = Feishu::new();

    let (captured, _) = feishu.sign(&withdrawal("oracle-1", "oc_oracle"));
    let ct = {
        let outer: Value = serde_json::from_slice(&captured).unwrap();
        b64.decode(outer["encrypt"].as_str().unwrap()).unwrap()
    };
    let wrap = |bytes: &[u8]| {
        json!({ "encrypt": b64.encode(bytes) })
            .to_string()
            .into_bytes()
    };
    let flip = |i: usize| {
        let mut c = ct.clone();
        c[i] ^= 0x40;
        wrap(&c)
    };
    let n = ct.len();
    let mut prefixed: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    prefixed.extend_from_slice(&ct[n - 16..]);
    let challenge = |token: &str| {
        let (body, _) =
            feishu.sign(&json!({"challenge":"c-1","token":token,"type":"url_verification"}));
        body
    };
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x01\x02 not json".to_vec()),
        ("the captured event, unsigned", captured.clone()),
        ("flipped IV byte", flip(3)),
        ("flipped byte in the second-to-last block", flip(n - 20)),
        ("random prefix before the real last block", wrap(&prefixed)),
        ("truncated ciphertext", wrap(&ct[..n - 16])),
        ("challenge with the wrong token", challenge("wrong")),
    ];
    let mut answers = Vec::new();
    for (name, body) in &variants {
        let started = Instant::now();
        let r = feishu.post(&bridge, body.clone(), &[]).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(20),
            "{name} answered after {took:?}, before the floor"
        );
        answers.push((name, r.status, r.body));
    }
    println!("unsigned variants: {answers:?}");
    let first = (answers[0].1, answers[0].2.clone());
    for (name, status, body) in &answers {
        assert_eq!(
            (*status, body.clone()),
            first,
            "{name} answered differently"
        );
    }
    assert_eq!(first.0, 401);

    let ok = feishu.post(&bridge, challenge(TOKEN), &[]).await;
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, r#"{"challenge":"c-1"}"#)
    );

    assert!(read_topic(&broker.bootstrap, &topic, 0, Duration::from_millis(500)).is_empty());
    let logs = bridge.log_text();
    assert!(
        logs.contains("unsigned request: "),
        "the log keeps the reason"
    );
    let m = bridge.metrics().await;
    let labelled = [
        "undecryptable",
        "missing_signature",
        "wrong_token",
        "malformed_json",
    ]
    .iter()
    .filter(|l| {
        metric(
            &m,
            &format!(
                "feishu_bridge_requests_total{{ingress=\"webhook\",outcome=\"rejected_{l}\"}}"
            ),
        ) > 0.0
    })
    .count();
    assert!(
        labelled >= 3,
        "the metric keeps the reason: {labelled} labels"
    );
}
