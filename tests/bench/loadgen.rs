//! Load generator for the benchmark (tests/bench/run.sh): sends unique,
//! signed and encrypted withdrawal events at a fixed concurrency or a fixed
//! rate, each worker on its own keep-alive HTTP/1 connection. Payloads are
//! generated and encrypted before the clock starts, so the generator's own crypto is
//! not measured. Afterwards it reads the topic back and checks that every
//! acknowledged event is there exactly once: a run that loses or duplicates
//! data is reported as invalid, not as a result.
//!
//! Prints one JSON object on stdout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use feishu_kafka_bridge::protocol::EncryptKey;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

#[path = "shared.rs"]
mod shared;
use shared::{connect, consumer, percentile, EventArgs};

#[derive(Parser, Debug)]
struct Args {
    /// host:port of the system under test.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "/webhook/event")]
    path: String,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests to send in all (including duplicates).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Users per event (1 or 50 in the sweeps).
    #[arg(long, default_value_t = 1)]
    users: usize,
    /// Share of requests that repeat an earlier event_id (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    dup_rate: f64,
    #[command(flatten)]
    event: EventArgs,
    /// Kafka bootstrap and topic to verify against; no verification when absent.
    #[arg(long)]
    brokers: Option<String>,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Stop after this many seconds even if requests remain (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
    /// Requests to send before measuring (not counted).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Send at this fixed rate (requests per second) instead of as fast as
    /// `concurrency` allows; `concurrency` then caps requests in flight.
    /// Latency is measured from each request's scheduled time, so a stall
    /// is charged to every request it delays (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// `name=pid[,pid…]`: report the CPU time (user + system) these
    /// processes spent during the measured requests, in µs per answered
    /// request (`cpu_us_per_request.name`). Repeatable.
    #[arg(long = "cpu")]
    cpu: Vec<String>,
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat:
/// the same accounting `perf stat`'s task-clock reads, without needing perf.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which may itself contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_of(watch: &[(String, Vec<String>)]) -> Vec<f64> {
    watch
        .iter()
        .map(|(_, pids)| pids.iter().map(|p| cpu_secs(p)).sum())
        .collect()
}

struct Prepared {
    event_id: String,
    body: Bytes,
    ts: String,
    nonce: String,
    sig: String,
}

fn envelope(event_id: &str, chat: usize, users: usize, token: &str) -> Value {
    let users: Vec<Value> = (0..users)
        .map(|u| json!({"name": format!("用户 {u} 🎉"), "tenant_key": "3774yuu3743",
            "user_id": {"union_id": format!("on_{u:030}"), "user_id": format!("u{u:07}"), "open_id": format!("ou_{u:031}")}}))
        .collect();
    json!({"schema": "2.0",
        "header": {"event_id": event_id, "event_type": "im.chat.member.user.withdrawn_v1", "create_time": "1608725989000",
                   "token": token, "app_id": "cli_9f5343c580712544", "tenant_key": "2ca1d211f64f6438"},
        "event": {"chat_id": format!("oc_{chat:032x}"),
                  "operator_id": {"union_id": "on_8ed6aa67826108097d9ee143816345", "user_id": "e33ggbyz", "open_id": "ou_84aad35d084aa403a838cf73ee18467"},
                  "external": false, "operator_tenant_key": "879dsyud8", "users": users,
                  "name": "群名称测试", "i18n_names": {"zh_cn": "群聊", "en_us": "group chat", "ja_jp": "グループチャット"}}})
}

/// Signs and encrypts `n` requests, on every core (it is the slow part of a
/// run's set-up, not of the measurement).
fn prepare(args: &Args, n: usize, tag: &str) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..n)
            .step_by(per)
            .map(|from| scope.spawn(move || prepare_range(args, from..(from + per).min(n), tag)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("prepare"))
            .collect()
    })
}

fn prepare_range(args: &Args, range: std::ops::Range<usize>, tag: &str) -> Vec<Prepared> {
    let key = EncryptKey::new(&args.event.encrypt_key);
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    let mut out: Vec<Prepared> = Vec::with_capacity(range.len());
    for i in range {
        // A duplicate repeats an earlier event_id of the same range
        // (re-encrypted, as Feishu's re-deliveries are); the rest are new.
        let dup = !out.is_empty() && rand::random::<f64>() < args.dup_rate;
        let event_id = if dup {
            out[rand::random_range(0..out.len())].event_id.clone()
        } else {
            format!("{}-{tag}-{i}", args.event.run_id)
        };
        let env = envelope(&event_id, i % 1024, args.users, &args.event.token);
        let body =
            json!({"encrypt": key.encrypt(env.to_string().as_bytes(), rand::random())}).to_string();
        let nonce = format!("n{i}");
        let sig = key.sign(&ts, &nonce, body.as_bytes());
        out.push(Prepared {
            event_id,
            body: Bytes::from(body),
            ts: ts.clone(),
            nonce,
            sig,
        });
    }
    out
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    statuses: HashMap<u16, usize>,
    acked: Vec<String>,
    errors: usize,
}

async fn worker(
    args: Arc<Args>,
    work: Arc<Vec<Prepared>>,
    next: Arc<AtomicUsize>,
    started: Instant,
    stop_at: Option<Instant>,
) -> WorkerResult {
    let mut res = WorkerResult::default();
    let mut sender = None;
    loop {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(p) = work.get(i) else { break };
        let scheduled = match args.rate {
            Some(rate) => {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                Some(at)
            }
            None => None,
        };
        // A server may close a connection after any response (gunicorn's
        // sync workers do after every one): reconnect and send the same
        // request again, once, rather than count the closed connection.
        let mut sent = false;
        for _ in 0..2 {
            if sender.is_none() {
                sender = connect(&args.addr).await;
            }
            let Some(s) = sender.as_mut() else { break };
            let req = hyper::Request::post(&args.path)
                .header("host", &args.addr)
                .header("content-type", "application/json")
                .header("x-lark-request-timestamp", &p.ts)
                .header("x-lark-request-nonce", &p.nonce)
                .header("x-lark-signature", &p.sig)
                .body(Full::new(p.body.clone()))
                .expect("request");
            let sent_at = scheduled.unwrap_or_else(Instant::now);
            match s.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    res.latencies_us
                        .push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    *res.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        res.acked.push(p.event_id.clone());
                    }
                    sent = true;
                    break;
                }
                Err(_) => sender = None,
            }
        }
        if !sent {
            res.errors += 1;
        }
    }
    res
}

async fn run(args: Arc<Args>, work: Vec<Prepared>) -> (WorkerResult, Duration) {
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let stop_at = (args.seconds > 0.0).then(|| started + Duration::from_secs_f64(args.seconds));
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                args.clone(),
                work.clone(),
                next.clone(),
                started,
                stop_at,
            ))
        })
        .collect();
    let mut all = WorkerResult::default();
    for t in tasks {
        let r = t.await.expect("worker");
        all.latencies_us.extend(r.latencies_us);
        for (k, v) in r.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.acked.extend(r.acked);
        all.errors += r.errors;
    }
    (all, started.elapsed())
}

/// The end offset of each partition before the run: the read-back starts
/// there, so it costs the same however many runs the topic already holds.
fn end_offsets(brokers: &str, topic: &str, partitions: i32, run_id: &str) -> Vec<i64> {
    let c = consumer(brokers, &format!("bench-{run_id}"));
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// Reads the topic back from `from`; returns records per event_id of this run.
fn read_back(
    brokers: &str,
    topic: &str,
    from: &[i64],
    run_id: &str,
    expect: usize,
) -> HashMap<String, usize> {
    let consumer = consumer(brokers, &format!("bench-{run_id}"));
    let mut tpl = TopicPartitionList::new();
    for (p, &offset) in from.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(offset))
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut first_at: HashMap<String, (i32, i64)> = HashMap::new();
    // A record is a (partition, offset). Started at an offset inside a
    // batch, this consumer on tansu sometimes hands out the batch's last
    // records twice; counting them twice would report a duplicate that is
    // not in the topic.
    let mut offsets_seen: std::collections::HashSet<(i32, i64)> = Default::default();
    let mut seen = 0usize;
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = Instant::now();
    let prefix = format!("{run_id}-");
    while Instant::now() < give_up {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let v: Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null);
                // Peers publish the envelope's event_id under different shapes.
                let id = v["event_id"]
                    .as_str()
                    .or(v["header"]["event_id"].as_str())
                    .unwrap_or_default();
                if id.starts_with(&prefix) && offsets_seen.insert((m.partition(), m.offset())) {
                    let n = counts.entry(id.to_owned()).or_default();
                    *n += 1;
                    let first = *first_at
                        .entry(id.to_owned())
                        .or_insert((m.partition(), m.offset()));
                    if *n > 1 {
                        eprintln!(
                            "duplicate record: {id} at partition {} offset {} (first at {first:?})",
                            m.partition(),
                            m.offset()
                        );
                    }
                    seen += 1;
                }
            }
            Some(Err(_)) => {}
            None if seen >= expect && quiet_since.elapsed() > Duration::from_secs(2) => break,
            None => {}
        }
    }
    counts
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if args.warmup > 0 {
        let warm = prepare(&args, args.warmup, "warmup");
        let _ = run(args.clone(), warm).await;
    }
    let work = prepare(&args, args.requests, "m");
    let from = match (&args.brokers, &args.topic) {
        (Some(b), Some(t)) => end_offsets(b, t, args.partitions, &args.event.run_id),
        _ => Vec::new(),
    };
    let unique: std::collections::HashSet<&str> =
        work.iter().map(|p| p.event_id.as_str()).collect();
    let unique = unique.len();
    let watch: Vec<(String, Vec<String>)> = args
        .cpu
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(n, p)| (n.to_string(), p.split(',').map(str::to_string).collect()))
        .collect();
    let cpu_before = cpu_of(&watch);
    let (res, took) = run(args.clone(), work).await;
    let cpu_after = cpu_of(&watch);
    let sent: usize = res.statuses.values().sum::<usize>() + res.errors;
    let mut lat = res.latencies_us.clone();
    lat.sort_unstable();
    let ok = res.statuses.get(&200).copied().unwrap_or(0);
    let mut report = json!({
        "concurrency": args.concurrency, "rate": args.rate, "users": args.users, "dup_rate": args.dup_rate,
        "requests": sent, "unique_events_prepared": unique, "seconds": took.as_secs_f64(),
        "throughput_rps": ok as f64 / took.as_secs_f64(),
        "p50_ms": percentile(&lat, 0.50), "p99_ms": percentile(&lat, 0.99), "p999_ms": percentile(&lat, 0.999),
        "statuses": res.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "transport_errors": res.errors,
    });
    if !watch.is_empty() {
        let answered = res.statuses.values().sum::<usize>().max(1) as f64;
        report["cpu_us_per_request"] = watch
            .iter()
            .zip(cpu_before.iter().zip(&cpu_after))
            .map(|((name, _), (b, a))| {
                (
                    name.clone(),
                    json!(((a - b) / answered * 1e7).round() / 10.0),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if let (Some(brokers), Some(topic)) = (&args.brokers, &args.topic) {
        let acked: std::collections::HashSet<&String> = res.acked.iter().collect();
        let counts = read_back(
            brokers,
            topic,
            &from,
            &format!("{}-m", args.event.run_id),
            acked.len(),
        );
        let lost = acked
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .count();
        let duplicated = counts.values().filter(|&&n| n > 1).count();
        report["verified"] = json!({"acked_events": acked.len(), "records": counts.values().sum::<usize>(), "lost": lost, "duplicated": duplicated, "valid": lost == 0 && duplicated == 0});
    }
    println!("{report}");
}
