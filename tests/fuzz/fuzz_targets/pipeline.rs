//! Envelope parse → signature → decrypt → token → classify → every record form, on
//! arbitrary bytes. The first byte picks how the rest is delivered:
//! * as a raw body, unsigned, to a bridge with an encrypt key;
//! * as a raw body, correctly signed (so fuzzing reaches decryption);
//! * as a plaintext envelope, encrypted and signed as Feishu would (so
//!   fuzzing reaches classification and normalization through the crypto);
//! * as a raw body to a bridge without a key (plaintext mode);
//! * as the payload of a long-connection event frame.
//! Any panic is a bug.
#![no_main]
#![allow(dead_code)]

#[path = "../../../src/protocol/mod.rs"]
mod protocol;
#[path = "../../../src/record/mod.rs"]
mod record;
#[path = "../../../src/secret.rs"]
mod secret;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use protocol::{EncryptKey, Inbound, SignatureHeaders, Verifier};

const KEY: &str = "fuzz-encrypt-key";
const TOKEN: &str = "fuzz-token";

fn exercise(verifier: &Verifier, body: &[u8], headers: SignatureHeaders<'_>, now: SystemTime) {
    if let Ok(Inbound::Event(event)) = verifier.verify(body, headers, now) {
        publish(&event);
    }
}

/// What the pipeline does with an accepted event, short of Kafka: every
/// form it can take (each member record, raw), or its dead letter.
fn publish(event: &protocol::VerifiedEvent) {
    let _ = event.event_id();
    let mut outcomes: Vec<Result<Vec<u8>, record::NormalizeError>> = record::MemberKind::ALL
        .into_iter()
        .map(|kind| record::member::normalize(event, kind, 0).map(|rec| serde_json::to_vec(&rec).unwrap_or_default()))
        .collect();
    outcomes.push(record::raw::encode(event).map(|rec| {
        let _ = rec.key;
        // The redacted envelope must stay JSON, and keep no token.
        let value: serde_json::Value = serde_json::from_str(&rec.value).expect("a raw record is JSON");
        assert!(value["header"].get("token").is_none_or(|t| t == "[redacted]"));
        rec.value.into_bytes()
    }));
    for outcome in outcomes {
        if let Err(reason) = outcome {
            let dl = record::DeadLetter::new(event, &reason, 0);
            let _ = (dl.chat_id(), dl.meta());
            let _ = serde_json::to_vec(&dl);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let key = secret::Secret::new(KEY);
    let with_key = Verifier::new(Some(&key), Some(secret::Secret::new(TOKEN)), Some(Duration::from_secs(300)));
    let enc = EncryptKey::new(KEY);
    match mode % 5 {
        0 => exercise(&with_key, rest, SignatureHeaders::default(), now),
        1 => {
            let sig = enc.sign("1700000000", "n", rest);
            let h = SignatureHeaders { timestamp: Some("1700000000"), nonce: Some("n"), signature: Some(&sig) };
            exercise(&with_key, rest, h, now);
        }
        2 => {
            let body = format!("{{\"encrypt\":\"{}\"}}", enc.encrypt(rest, [7; 16]));
            let sig = enc.sign("1700000000", "n", body.as_bytes());
            let h = SignatureHeaders { timestamp: Some("1700000000"), nonce: Some("n"), signature: Some(&sig) };
            exercise(&with_key, body.as_bytes(), h, now);
        }
        3 => exercise(&Verifier::new(None, None, None), rest, SignatureHeaders::default(), now),
        // An event frame's payload from the long connection.
        _ => {
            if let Ok(event) = protocol::from_long_connection(rest) {
                publish(&event);
            }
        }
    }
});
