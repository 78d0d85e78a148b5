//! A real Prometheus server (Debian's `prometheus`) scrapes the running
//! bridge; every metric and label the dashboard and the alerting rules use
//! must exist, and every expression must evaluate.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const DASHBOARD: &str = include_str!("../deploy/grafana/feishu-kafka-bridge.json");
const ALERTS: &str = include_str!("../deploy/prometheus/alerts.yaml");
/// Labels that Kubernetes service discovery adds, not the bridge.
const TARGET_LABELS: &[&str] = &["namespace", "pod", "job", "instance"];

struct Prometheus {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn prometheus_bin() -> String {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("prometheus is not installed: run `bash tests/run.sh` (it installs Debian's prometheus package)");
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("fkb-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: feishu-kafka-bridge\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut cmd = Command::new(prometheus_bin());
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = common::child::spawn(cmd).expect("cannot start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: TempDir(dir),
    }
}

async fn api(prom: &Prometheus, path: &str, params: &[(&str, &str)]) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", prom.url))
        .query(params)
        .send()
        .await;
    match resp {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Every PromQL expression of the dashboard and the rules, with Grafana's
/// variables replaced by what they mean outside Kubernetes.
fn expressions() -> Vec<String> {
    let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut out: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    out.extend(
        ALERTS
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr: "))
            .map(str::to_owned),
    );
    out.into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
        })
        .collect()
}

/// (metric, label) pairs used in label matchers such as `metric{label="x"}`.
fn matchers(exprs: &[String]) -> BTreeSet<(String, String, Option<String>)> {
    let mut out = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("feishu_bridge_") {
            rest = &rest[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..end].to_owned();
            rest = &rest[end..];
            if let Some(body) = rest.strip_prefix('{') {
                let close = body.find('}').unwrap();
                for m in body[..close].split(',') {
                    let m = m.trim();
                    let op = if m.contains("=~") {
                        "=~"
                    } else if m.contains("!=") {
                        "!="
                    } else {
                        "="
                    };
                    let (label, value) = m.split_once(op).unwrap();
                    let exact = (op == "=").then(|| value.trim_matches('"').to_owned());
                    out.insert((name.clone(), label.trim().to_owned(), exact));
                }
            } else {
                out.insert((name, String::new(), None));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_metric_the_dashboard_and_alerts_use() {
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "prom");
    // With the app's credentials, so that the snapshot and OpenAPI series
    // the dashboard and the rules use exist too.
    let openapi = common::openapi_stand_in::OpenApiStandIn::start();
    openapi.add_chat("oc_p", 3);
    // And a listed app on a long connection of its own, for its gauge (the
    // stand-in has no long-connection endpoint: it stays down, labelled).
    let apps = std::env::temp_dir().join(format!("fkb-prom-apps-{}.json", std::process::id()));
    std::fs::write(
        &apps,
        json!({"apps": [{"name": "it", "app_id": "cli_prom_it", "ingress": "long_connection", "app_secret": "prom-it-secret"}]})
            .to_string(),
    )
    .unwrap();
    let bridge = Bridge::start(
        &broker.bootstrap,
        &topic,
        &[
            ("FEISHU_APP_ID", common::openapi_stand_in::APP_ID),
            ("FEISHU_APP_SECRET", common::openapi_stand_in::APP_SECRET),
            ("FEISHU_DOMAIN", &openapi.url),
            ("BRIDGE_APPS_FILE", apps.to_str().unwrap()),
        ],
    );
    let snapshot = reqwest::Client::new()
        .post(bridge.admin_url("/snapshot?chat_id=oc_p"))
        .send()
        .await
        .unwrap();
    assert_eq!(snapshot.status(), 200);
    let feishu = Feishu::new();
    // One of each outcome the rules and panels look at.
    // Published, then its duplicate.
    for _ in 0..2 {
        let r = feishu.push(&bridge, &withdrawal("p-1", "oc_p")).await;
        assert_eq!(r.status, 200);
    }
    let mut dl = withdrawal("p-2", "oc_p");
    dl["event"]["external"] = json!("x");
    assert_eq!(feishu.push(&bridge, &dl).await.status, 200);
    let mut other = withdrawal("p-3", "oc_p");
    other["header"]["event_type"] = "im.message.receive_v1".into();
    assert_eq!(feishu.push(&bridge, &other).await.status, 200);
    let (body, h) = feishu.sign(&withdrawal("p-4", "oc_p"));
    let forged = [
        h[0].clone(),
        h[1].clone(),
        ("X-Lark-Signature", "00".repeat(32)),
    ];
    assert_eq!(
        feishu.post(&bridge, body, &forged).await.status,
        401,
        "bad signature"
    );
    let mut wrong = withdrawal("p-5", "oc_p");
    wrong["header"]["token"] = "x".into();
    assert_eq!(feishu.push(&bridge, &wrong).await.status, 401);

    let prom = start_prometheus(&bridge.admin);
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let v = api(
            &prom,
            "/api/v1/query",
            &[("query", "up{job=\"feishu-kafka-bridge\"}")],
        )
        .await;
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "prometheus never scraped the bridge: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A few scrapes so that rate() has two points.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let exprs = expressions();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut problems = Vec::new();
    for (metric, label, exact) in matchers(&exprs) {
        let series = api(&prom, "/api/v1/series", &[("match[]", &metric)]).await;
        let series = series["data"].as_array().cloned().unwrap_or_default();
        if series.is_empty() {
            problems.push(format!("{metric}: no such series"));
            continue;
        }
        if label.is_empty() || TARGET_LABELS.contains(&label.as_str()) {
            continue;
        }
        if !series.iter().any(|s| s.get(&label).is_some()) {
            problems.push(format!("{metric}: no label {label}"));
        }
        if let Some(value) = exact {
            if !series.iter().any(|s| s[&label] == value.as_str()) {
                problems.push(format!("{metric}: no series with {label}=\"{value}\""));
            }
        }
    }
    for e in &exprs {
        let v = api(&prom, "/api/v1/query", &[("query", e)]).await;
        if v["status"] != "success" {
            problems.push(format!("does not evaluate: {e}: {v}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // The counters carry what was driven above.
    let v = api(
        &prom,
        "/api/v1/query",
        &[(
            "query",
            "feishu_bridge_requests_total{ingress=\"webhook\",outcome=\"rejected_bad_signature\"}",
        )],
    )
    .await;
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
    let _ = std::fs::remove_file(&apps);
}
