//! The container image, built from `deploy/Dockerfile` and run the way the
//! manifests run it: as user 65532, with a read-only root file system, no
//! capabilities and no privilege escalation. It must reach `/readyz` on the
//! admin port against a real broker (tansu) and publish a signed event once.
//!
//! No image registry is reachable from these machines, so the runtime stage
//! is built on a local Debian 12 base that holds what distroless `cc`
//! holds (glibc, libgcc, libssl3, ca-certificates; made by debootstrap,
//! once per machine), with the release binary that `cargo build --release
//! --locked` made (`BINARY_FROM=prebuilt`). The builder stage needs the
//! Rust image and cannot run here; its steps are CI's build, and this test
//! checks the part that could drift: that the files it copies are enough
//! for its cargo command.
//!
//! Needs podman, runc and debootstrap (tests/run.sh installs them) and root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The local stand-in for `gcr.io/distroless/cc-debian12:nonroot`.
const BASE: &str = "localhost/feishu-kafka-bridge-test/debian12-cc:latest";
const IMAGE: &str = "localhost/feishu-kafka-bridge-test/image:latest";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// podman with this machine's quirks: runc (crun fails on hybrid cgroups
/// here) and no default ulimits (the sandbox may not raise rlimits).
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Podman {
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman { conf }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf)
            .args(["--runtime", "runc"])
            .args(args);
        cmd
    }

    /// Runs podman; its standard output, or a panic with what it said.
    fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("podman is not installed ({e}); run bash tests/run.sh"));
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn succeeds(&self, args: &[&str]) -> bool {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Removes the container whatever ends the test.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if !self.podman.succeeds(&["rm", "-f", "-t", "0", &self.name]) {
            eprintln!("could not remove the container {}", self.name);
        }
    }
}

/// The Debian 12 base: made once per machine from Debian's packages.
fn base_image(podman: &Podman, work: &Path) {
    if podman.succeeds(&["image", "exists", BASE]) {
        return;
    }
    let rootfs = work.join("rootfs");
    let started = Instant::now();
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=libssl3,ca-certificates",
            "bookworm",
        ])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian")
        .stdout(Stdio::null())
        .status()
        .expect("debootstrap is not installed; run bash tests/run.sh");
    assert!(status.success(), "debootstrap failed");
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = podman
        .command(&["import", "--quiet", "-", BASE])
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(tar.wait().unwrap().success(), "tar failed");
    assert!(import.success(), "podman import failed");
    let _ = std::fs::remove_dir_all(&rootfs);
    println!("base image made in {:?}", started.elapsed());
}

/// `cargo build --release --locked`'s binary (a no-op when CI built it).
fn release_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .current_dir(ROOT)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--bin",
            "feishu-kafka-bridge",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "release build failed");
    target_dir().join("release/feishu-kafka-bridge")
}

fn target_dir() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .current_dir(ROOT)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(v["target_directory"].as_str().unwrap())
}

/// The build stage's `COPY` sources (build context paths).
fn build_stage_copies(dockerfile: &str) -> Vec<String> {
    let stage = dockerfile
        .split("\nFROM ")
        .find(|s| s.contains(" AS build"))
        .expect("a build stage");
    stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_build_stage_copies_enough_to_build_the_binary() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/deploy/Dockerfile")).unwrap();
    let copies = build_stage_copies(&dockerfile);
    assert!(copies.contains(&"Cargo.lock".to_owned()), "{copies:?}");
    assert!(
        dockerfile.contains("RUN cargo build --release --locked --bin feishu-kafka-bridge"),
        "the build stage runs CI's cargo command"
    );
    // Only what the stage copies, built with its command: offline, in a
    // target directory of its own seeded with hard links to this
    // checkout's release build, so that only the crate itself compiles
    // (and this checkout's binary is left alone).
    let dir = std::env::temp_dir().join(format!("fkb-build-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for c in &copies {
        let status = Command::new("cp")
            .args(["-r", &format!("{ROOT}/{c}")])
            .arg(dir.join(c))
            .status()
            .unwrap();
        assert!(status.success(), "cp {c}");
    }
    release_binary();
    let check = target_dir().join("build-stage-check");
    if !check.join("release").exists() {
        std::fs::create_dir_all(&check).unwrap();
        let seeded = Command::new("cp")
            .arg("-al")
            .arg(target_dir().join("release"))
            .arg(check.join("release"))
            .status()
            .unwrap();
        assert!(seeded.success(), "seeding {}", check.display());
    }
    let out = Command::new(env!("CARGO"))
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &check)
        .args([
            "build",
            "--release",
            "--locked",
            "--offline",
            "--quiet",
            "--bin",
            "feishu-kafka-bridge",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the build stage's files do not build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_image_runs_as_the_manifests_run_it_and_publishes_an_event_once() {
    let work = std::env::temp_dir().join(format!("fkb-image-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let podman = Podman::new(&work);
    let started = Instant::now();
    base_image(&podman, &work);

    // The runtime stage, with the release binary as the build context.
    let context = work.join("context");
    std::fs::create_dir_all(context.join("target/release")).unwrap();
    let binary = context.join("target/release/feishu-kafka-bridge");
    std::fs::copy(release_binary(), &binary).unwrap();
    assert!(Command::new("strip")
        .arg(&binary)
        .status()
        .unwrap()
        .success());
    let dockerfile = format!("{ROOT}/deploy/Dockerfile");
    let context_arg = context.to_string_lossy().into_owned();
    podman.run(&[
        "build",
        "--quiet",
        "-f",
        &dockerfile,
        "--build-arg",
        "BINARY_FROM=prebuilt",
        "--build-arg",
        &format!("RUNTIME_IMAGE={BASE}"),
        "--build-arg",
        &format!("BUILDER_IMAGE={BASE}"),
        "-t",
        IMAGE,
        &context_arg,
    ]);
    let built = started.elapsed();

    let config: serde_json::Value = serde_json::from_str(&podman.run(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        IMAGE,
    ]))
    .unwrap();
    assert_eq!(config["User"], "65532:65532");
    let ports = config["ExposedPorts"].as_object().expect("exposed ports");
    assert!(
        ports.contains_key("8080/tcp") && ports.contains_key("9090/tcp"),
        "{ports:?}"
    );
    assert_eq!(
        config["Entrypoint"][0],
        "/usr/local/bin/feishu-kafka-bridge"
    );

    // Run it as the Deployment's securityContext asks, against tansu.
    let broker = Broker::shared();
    let (topic, _) = topics(broker, "image");
    let (listen, admin) = (free_port(), free_port());
    let name = format!("fkb-image-test-{}", std::process::id());
    let mut run = vec![
        "run".to_owned(),
        "-d".into(),
        "--name".into(),
        name.clone(),
        "--network".into(),
        "host".into(),
        "--read-only".into(),
        "--cap-drop=ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--user".into(),
        "65532:65532".into(),
    ];
    for (k, v) in [
        ("KAFKA_BROKERS", broker.bootstrap.clone()),
        ("KAFKA_TOPIC", topic.clone()),
        ("BRIDGE_LISTEN", format!("127.0.0.1:{listen}")),
        ("BRIDGE_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
        ("FEISHU_ENCRYPT_KEY", ENCRYPT_KEY.into()),
        ("FEISHU_VERIFICATION_TOKEN", TOKEN.into()),
        ("BRIDGE_READINESS_INTERVAL_MS", "300".into()),
        // tests/run.sh checks that nothing a test started outlives it.
        (
            "FKB_TEST_RUN",
            std::env::var("FKB_TEST_RUN").unwrap_or_default(),
        ),
    ] {
        run.push("-e".into());
        run.push(format!("{k}={v}"));
    }
    run.push(IMAGE.into());
    let args: Vec<&str> = run.iter().map(String::as_str).collect();
    let container = Container {
        podman: &podman,
        name: name.clone(),
    };
    podman.run(&args);

    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let give_up = Instant::now() + Duration::from_secs(60);
    while reqwest::blocking_get(&ready).ok() != Some(200) {
        assert!(
            Instant::now() < give_up,
            "not ready within 60 s; logs:\n{}",
            podman.run(&["logs", &name])
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // As the manifests ask: user 65532, no capabilities, no new privileges,
    // nothing writable but what the process was given.
    let inspected: serde_json::Value =
        serde_json::from_str(&podman.run(&["inspect", &name])).unwrap();
    let state = &inspected[0];
    assert_eq!(state["HostConfig"]["ReadonlyRootfs"], true);
    let pid = state["State"]["Pid"].as_i64().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(field("Uid:").iter().all(|u| *u == "65532"), "{status}");
    assert!(field("Gid:").iter().all(|g| *g == "65532"), "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("CapPrm:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");

    // A signed event, twice: one record.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let feishu = Feishu::new();
    let url = format!("http://127.0.0.1:{listen}/webhook/event");
    let envelope = withdrawal("image-event-1", "oc_image");
    for _ in 0..2 {
        let (body, headers) = feishu.sign(&envelope);
        let status = rt.block_on(async {
            signed_post(&feishu.client, &url, body, &headers)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(status, 200);
    }
    let records = read_topic(&broker.bootstrap, &topic, 1, Duration::from_millis(1500));
    assert_eq!(records.len(), 1, "one record for an event pushed twice");
    assert_eq!(records[0].headers["event_id"], "image-event-1");
    assert_eq!(records[0].key.as_deref(), Some("oc_image"));
    println!(
        "image built in {built:?} (base image included when it was made), ready and publishing {:?} after the start",
        started.elapsed()
    );
    // Removed while podman's configuration (in `work`) is still there.
    drop(container);
    let _ = std::fs::remove_dir_all(&work);
}
