//! Soak driver (tests/bench/soak.sh): sends signed and encrypted events to
//! several replicas at a fixed rate for a long time, generating each one
//! when it is due (an hour of events does not fit in memory ready-made),
//! and afterwards reads the topics back.
//!
//! The mix: the five member types and one raw type, and a share of
//! repeated deliveries (an event already answered 200, re-encrypted, sent
//! to whichever replica is next, as Feishu's re-deliveries are).
//!
//! Prints one JSON line per interval (`"window"`: answers, p50 and p99 from
//! each request's scheduled time), then one summary line (`"summary"`: the
//! p50/p99 of each block of `--block-secs`, statuses, and the read-back:
//! every event answered 200 must be in the topics exactly once).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use feishu_kafka_bridge::protocol::EncryptKey;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

#[path = "events.rs"]
mod events;
#[path = "shared.rs"]
mod shared;
use events::{envelope, MEMBER_TYPES, RAW_TYPE};
use shared::{connect, consumer, percentile, EventArgs, Sender};

#[derive(Parser, Debug)]
struct Args {
    /// host:port of each replica, comma-separated; the workers (and so the
    /// requests) are spread evenly over them.
    #[arg(long)]
    addrs: String,
    #[arg(long, default_value = "/webhook/event")]
    path: String,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    #[arg(long)]
    seconds: f64,
    /// Seconds per window line.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Seconds per latency block of the summary (the first is the warm-up
    /// the later ones are compared with).
    #[arg(long, default_value_t = 600.0)]
    block_secs: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Share of requests that repeat an event already answered 200.
    #[arg(long, default_value_t = 0.05)]
    dup_rate: f64,
    /// A repeat re-delivers an event answered at least this many seconds
    /// earlier (Feishu retries 15 s after a failed delivery at the
    /// soonest; a copy on another replica sooner than the dedup follower's
    /// delay is outside what the bridge promises, docs/guarantees.md).
    #[arg(long, default_value_t = 15.0)]
    redeliver_after: f64,
    /// Share of new events of the raw type (`im.message.receive_v1`).
    #[arg(long, default_value_t = 0.2)]
    raw_share: f64,
    #[command(flatten)]
    event: EventArgs,
    #[arg(long)]
    brokers: String,
    /// Topics to read back (member, raw, dead letters), comma-separated.
    #[arg(long)]
    topics: String,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

/// An event that was answered 200: enough to send it again.
#[derive(Clone)]
struct Sent {
    index: usize,
    event_type: &'static str,
    chat: usize,
}

#[derive(Default)]
struct Window {
    latencies_us: Vec<u32>,
    statuses: HashMap<u16, usize>,
    errors: usize,
    repeats: usize,
}

struct Shared {
    args: Args,
    addrs: Vec<String>,
    key: EncryptKey,
    next: AtomicUsize,
    started: Instant,
    window: Mutex<Window>,
    /// Every latency, by block, for the summary.
    blocks: Mutex<Vec<Vec<u32>>>,
    totals: Mutex<Window>,
    acked: Mutex<HashSet<usize>>,
    /// Events answered 200, oldest first, with when: the repeats' pool.
    recent: Mutex<VecDeque<(Instant, Sent)>>,
}

/// How long an answered event stays a candidate for a repeat after it
/// becomes one.
const POOL_SECS: f64 = 15.0;

fn pick_type(raw_share: f64) -> &'static str {
    let r: f64 = rand::random();
    if r < raw_share {
        return RAW_TYPE;
    }
    let mut x = (r - raw_share) / (1.0 - raw_share);
    for (t, w) in MEMBER_TYPES {
        if x < w {
            return t;
        }
        x -= w;
    }
    MEMBER_TYPES[0].0
}

async fn worker(s: Arc<Shared>, replica: usize) {
    // Each worker holds one keep-alive connection to one replica, opened
    // before the load starts, as a load balancer's pool would; the workers
    // are spread evenly over the replicas. (Choosing the replica by request
    // number instead gave each worker one parity, so its connection to the
    // other replica idled past the header timeout, was closed, and was
    // reopened now and then: the replicas' descriptors drifted for minutes.)
    let addr = &s.addrs[replica];
    let mut sender: Option<Sender> = connect(addr).await;
    let end = s.started + Duration::from_secs_f64(s.args.seconds);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        let at = s.started + Duration::from_secs_f64(i as f64 / s.args.rate);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let repeat = if rand::random::<f64>() < s.args.dup_rate {
            let recent = s.recent.lock().unwrap();
            let due = Instant::now()
                .checked_sub(Duration::from_secs_f64(s.args.redeliver_after))
                .unwrap_or(s.started);
            let eligible = recent.partition_point(|(at, _)| *at <= due);
            (eligible > 0).then(|| recent[rand::random_range(0..eligible)].1.clone())
        } else {
            None
        };
        let is_repeat = repeat.is_some();
        let sent = repeat.unwrap_or_else(|| Sent {
            index: i,
            event_type: pick_type(s.args.raw_share),
            chat: i % 1024,
        });
        let event_id = format!("{}-{}", s.args.event.run_id, sent.index);
        let plain =
            envelope(&event_id, sent.event_type, sent.chat, &s.args.event.token).to_string();
        let body = json!({"encrypt": s.key.encrypt(plain.as_bytes(), rand::random())}).to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
            .to_string();
        let nonce = format!("n{i}");
        let sig = s.key.sign(&ts, &nonce, body.as_bytes());
        let body = Bytes::from(body);
        let mut status = None;
        for _ in 0..2 {
            if sender.is_none() {
                sender = connect(addr).await;
            }
            let Some(conn) = sender.as_mut() else {
                break;
            };
            let req = hyper::Request::post(&s.args.path)
                .header("host", &s.addrs[replica])
                .header("content-type", "application/json")
                .header("x-lark-request-timestamp", &ts)
                .header("x-lark-request-nonce", &nonce)
                .header("x-lark-signature", &sig)
                .body(Full::new(body.clone()))
                .expect("request");
            match conn.send_request(req).await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    status = Some(code);
                    break;
                }
                Err(_) => sender = None,
            }
        }
        let took = at.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if status == Some(200) && !is_repeat {
            s.acked.lock().unwrap().insert(sent.index);
            let now = Instant::now();
            let mut recent = s.recent.lock().unwrap();
            let horizon = Duration::from_secs_f64(s.args.redeliver_after + POOL_SECS);
            while recent
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > horizon)
            {
                recent.pop_front();
            }
            recent.push_back((now, sent.clone()));
        }
        let block = (at.duration_since(s.started).as_secs_f64() / s.args.block_secs) as usize;
        {
            let mut blocks = s.blocks.lock().unwrap();
            if blocks.len() <= block {
                blocks.resize(block + 1, Vec::new());
            }
            blocks[block].push(took);
        }
        let mut w = s.window.lock().unwrap();
        w.latencies_us.push(took);
        match status {
            Some(code) => *w.statuses.entry(code).or_default() += 1,
            None => w.errors += 1,
        }
        w.repeats += usize::from(is_repeat);
    }
}

fn statuses_json(statuses: &HashMap<u16, usize>) -> Value {
    statuses
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn print_line(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Counts the records of this run in `topics`, by event index (from the
/// `event_id` header every record carries).
fn read_back(args: &Args, expect: usize) -> HashMap<usize, usize> {
    let consumer = consumer(&args.brokers, &format!("soak-{}", args.event.run_id));
    let mut tpl = TopicPartitionList::new();
    for topic in args.topics.split(',') {
        for p in 0..args.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let prefix = format!("{}-", args.event.run_id);
    let mut counts: HashMap<usize, usize> = HashMap::new();
    // tansu may hand a batch's last records out twice to a consumer that
    // starts inside it: a record is its (topic, partition, offset).
    let mut seen_at: HashSet<(String, i32, i64)> = HashSet::new();
    // Generous: tansu serves a long topic at some 10,000 records a second.
    let give_up = Instant::now() + Duration::from_secs(120 + (expect / 10_000) as u64);
    let mut quiet_since = Instant::now();
    while Instant::now() < give_up {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let id = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "event_id")
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned)
                });
                let Some(index) = id
                    .as_deref()
                    .and_then(|id| id.strip_prefix(&prefix))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                if seen_at.insert((m.topic().to_owned(), m.partition(), m.offset())) {
                    *counts.entry(index).or_default() += 1;
                }
            }
            Some(Err(_)) => {}
            None if seen_at.len() >= expect && quiet_since.elapsed() > Duration::from_secs(3) => {
                break
            }
            None if quiet_since.elapsed() > Duration::from_secs(30) => break,
            None => {}
        }
    }
    counts
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let addrs: Vec<String> = args.addrs.split(',').map(str::to_owned).collect();
    let shared = Arc::new(Shared {
        key: EncryptKey::new(&args.event.encrypt_key),
        addrs,
        next: AtomicUsize::new(0),
        started: Instant::now(),
        window: Mutex::new(Window::default()),
        blocks: Mutex::new(Vec::new()),
        totals: Mutex::new(Window::default()),
        acked: Mutex::new(HashSet::new()),
        recent: Mutex::new(VecDeque::new()),
        args,
    });
    let workers: Vec<_> = (0..shared.args.concurrency)
        .map(|w| tokio::spawn(worker(shared.clone(), w % shared.addrs.len())))
        .collect();
    let reporter = {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(s.args.interval));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut w = std::mem::take(&mut *s.window.lock().unwrap());
                w.latencies_us.sort_unstable();
                print_line(json!({"window": {
                    "t": s.started.elapsed().as_secs_f64().round(),
                    "answered": w.latencies_us.len(), "repeats": w.repeats,
                    "p50_ms": percentile(&w.latencies_us, 0.5), "p99_ms": percentile(&w.latencies_us, 0.99),
                    "statuses": statuses_json(&w.statuses), "transport_errors": w.errors}}));
                let mut t = s.totals.lock().unwrap();
                for (k, v) in w.statuses {
                    *t.statuses.entry(k).or_default() += v;
                }
                t.errors += w.errors;
                t.repeats += w.repeats;
            }
        })
    };
    for w in workers {
        let _ = w.await;
    }
    // The last (partial) window's answers join the totals.
    tokio::time::sleep(Duration::from_millis(50)).await;
    reporter.abort();
    {
        let w = std::mem::take(&mut *shared.window.lock().unwrap());
        let mut t = shared.totals.lock().unwrap();
        for (k, v) in w.statuses {
            *t.statuses.entry(k).or_default() += v;
        }
        t.errors += w.errors;
        t.repeats += w.repeats;
    }
    let blocks: Vec<Value> = shared
        .blocks
        .lock()
        .unwrap()
        .iter_mut()
        .map(|b| {
            b.sort_unstable();
            json!({"answered": b.len(), "p50_ms": percentile(b, 0.5), "p99_ms": percentile(b, 0.99)})
        })
        .collect();
    let acked = shared.acked.lock().unwrap().clone();
    let counts = read_back(&shared.args, acked.len());
    let lost = acked.iter().filter(|i| !counts.contains_key(i)).count();
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    let t = shared.totals.lock().unwrap();
    print_line(json!({"summary": {
        "rate": shared.args.rate, "seconds": shared.args.seconds, "replicas": shared.addrs.len(),
        "statuses": statuses_json(&t.statuses), "transport_errors": t.errors, "repeats": t.repeats,
        "blocks": blocks, "block_secs": shared.args.block_secs,
        "verified": {"acked_events": acked.len(), "records": counts.values().sum::<usize>(),
                     "lost": lost, "duplicated": duplicated}}}));
}
