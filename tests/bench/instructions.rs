//! The bridge's own work per delivery, on a fixed input, for CI's gate
//! (tests/bench/instructions.sh): verify the signature, decrypt, parse and
//! classify; route; claim the event_id; build the message (the member
//! record or the raw record, its headers and CloudEvents attributes);
//! settle the claim. The input is fixed: the five member types and a raw
//! type in turn, one chat per event, every fifth event delivered a second
//! time (a duplicate: verified, routed and answered from the dedup memory).
//! No HTTP and no Kafka: what moves this figure is the bridge's code.
//!
//! Under `valgrind --tool=callgrind --toggle-collect='*measured*'` only the
//! deliveries are counted (the payloads are prepared outside, and a warm-up
//! runs first), so the count repeats exactly from run to run on one build.
//! Allocations (calls that allocate: alloc, alloc_zeroed, realloc) are
//! counted by this program's own allocator, mimalloc as in the service.
//!
//!     cargo build --release --features bench --bin feishu-bench-instructions
//!     target/release/feishu-bench-instructions 3000
//!
//! Prints `deliveries N allocations_per_delivery A`.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use feishu_kafka_bridge::config::Secret;
use feishu_kafka_bridge::dedup::{Claim, Dedup, EventKey, Settled};
use feishu_kafka_bridge::message;
use feishu_kafka_bridge::protocol::{EncryptKey, Inbound, SignatureHeaders, Verifier};
use feishu_kafka_bridge::record::MemberKind;
use feishu_kafka_bridge::routing::{RawRoute, RawTypes, Routing};

#[path = "events.rs"]
mod events;
use events::{envelope, MEMBER_TYPES, RAW_TYPE};

const KEY: &str = "bench-encrypt-key";
const TOKEN: &str = "bench-verification-token";
const WARM_UP: usize = 200;

/// mimalloc, counting the calls that allocate while `COUNTING` is on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One delivery as the webhook receives it.
struct Delivery {
    body: Vec<u8>,
    timestamp: String,
    signature: String,
}

struct Bridge {
    verifier: Verifier,
    routing: Routing,
    dedup: Dedup,
}

/// The payloads: event `i` of the mix, its fifth ones twice.
fn deliveries(key: &EncryptKey, from: usize, n: usize) -> Vec<Delivery> {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let mut out = Vec::new();
    for i in from..from + n {
        let kinds = MEMBER_TYPES.len() + 1;
        let event_type = MEMBER_TYPES
            .get(i % kinds)
            .map(|(t, _)| *t)
            .unwrap_or(RAW_TYPE);
        // Fixed width: every event_id costs the same to hash and copy.
        let plain = envelope(&format!("ins-{i:010}"), event_type, i, TOKEN).to_string();
        let copies = if i % 5 == 4 { 2 } else { 1 };
        for copy in 0..copies {
            let iv = [(i + copy) as u8; 16];
            let body = serde_json::json!({"encrypt": key.encrypt(plain.as_bytes(), iv)})
                .to_string()
                .into_bytes();
            let signature = key.sign(&timestamp, "nonce", &body);
            out.push(Delivery {
                body,
                timestamp: timestamp.clone(),
                signature,
            });
        }
    }
    out
}

/// What the bridge does with one delivery, short of HTTP and Kafka.
fn deliver(bridge: &Bridge, d: &Delivery) -> usize {
    let headers = SignatureHeaders {
        timestamp: Some(&d.timestamp),
        nonce: Some("nonce"),
        signature: Some(&d.signature),
    };
    let Ok(Inbound::Event(event)) = bridge.verifier.verify(&d.body, headers, SystemTime::now())
    else {
        panic!("every prepared delivery verifies");
    };
    let Ok(route) = bridge.routing.route(&event) else {
        panic!("every prepared event is routed");
    };
    let Some(event_id) = event.event_id().map(str::to_owned) else {
        panic!("every prepared event has an event_id");
    };
    let key = EventKey {
        app_id: event.app_id().unwrap_or_default(),
        event_id: &event_id,
    };
    match bridge.dedup.claim(key) {
        Claim::Owner(owner) => {
            let (msg, built) = message::build(&event, route, 1_700_000_000_000);
            assert!(built.is_ok(), "every prepared event becomes its record");
            owner.settle(Settled::Published);
            black_box(msg).payload.len()
        }
        Claim::Published => 0,
        _ => panic!("one delivery at a time: nothing else can be claimed"),
    }
}

/// The deliveries callgrind counts (`--toggle-collect='*measured*'`).
#[inline(never)]
fn measured(bridge: &Bridge, d: &Delivery) -> usize {
    deliver(bridge, d)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    let key = EncryptKey::new(KEY);
    let bridge = Bridge {
        verifier: Verifier::new(Some(&Secret::new(KEY)), Some(Secret::new(TOKEN)), None),
        routing: Routing::new(
            MemberKind::ALL.into_iter().collect::<BTreeSet<_>>(),
            Some(RawRoute {
                types: RawTypes::Listed([RAW_TYPE.to_owned()].into()),
                topic: "raw".into(),
            }),
        ),
        dedup: Dedup::new(Duration::from_secs(3600), 1_000_000),
    };
    let warm = deliveries(&key, 1_000_000, WARM_UP);
    let work = deliveries(&key, 0, n);
    let mut bytes = 0;
    for d in &warm {
        bytes += deliver(&bridge, d);
    }
    COUNTING.store(true, Ordering::Relaxed);
    for d in &work {
        bytes += measured(&bridge, d);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    println!(
        "deliveries {} allocations_per_delivery {:.1} record_bytes {bytes}",
        work.len(),
        allocations as f64 / work.len() as f64
    );
}
