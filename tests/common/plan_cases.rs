// The plan's integration tests. Included by tests/bench_plan.rs, whose
// `Shoal` starts the server (`start`, `url`, `pid`).

use shoal_bench::plan::{self, report, workload::Workload, PlanParams, Schedule};

const MIX: &str = r#"
name = "test mix"
[[rpc]]
name = "rpc"
rate = 200
size = 64
p99_ms = 500
responders = 2

[[events]]
name = "fan"
rate = 300
size = 32
fanout = 2

[[events]]
name = "jobs"
rate = 100
queue = 2
"#;

fn params(urls: Vec<String>, w: Workload, loads: &[f64], repeats: usize, secs: f64) -> PlanParams {
    PlanParams {
        urls,
        workload: w,
        schedule: Schedule {
            loads: Some(loads.to_vec()),
            repeats,
            step_secs: secs,
            drain_ms: 1500,
            stall_ms: 400,
            ..Schedule::default()
        },
        server_cores: None,
        server_pids: Vec::new(),
        node_cores: Some(4),
        target_util: 0.7,
        command: "test".into(),
        workers: Vec::new(),
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn tiny_plan_end_to_end() {
    let s = Shoal::start(2, &[], None);
    let mut p = params(
        vec![s.url()],
        Workload::parse(MIX).unwrap(),
        &[0.5, 1.0],
        2,
        1.0,
    );
    p.server_pids = vec![(s.pid() as u32)];
    let plan = plan::run(&p, &|_| {}).unwrap();
    assert_eq!(plan.servers.len(), 1);
    let sp = &plan.servers[0];
    assert_eq!(
        sp.server.shoal_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(
        sp.cores_source.contains(&format!("PID {}", (s.pid() as u32))),
        "{}",
        sp.cores_source
    );
    assert_eq!(sp.steps.len(), 2);
    for st in &sp.steps {
        assert!(st.setup_errors.is_empty(), "{:?}", st.setup_errors);
        assert_eq!(st.classes.len(), 3);
        for c in &st.classes {
            assert_eq!(c.repeats.len(), 2);
            for r in &c.repeats {
                // Every message arrived: 1 s at the step's rate, × 2 for fan-out.
                let per_msg = if c.name == "fan" { 2 } else { 1 };
                let want = (c.offered_rate * 1.0).round() as u64;
                assert_eq!(r.sent, want, "{} step {}", c.name, st.index);
                assert_eq!(
                    (r.expected, r.received, r.lost),
                    (want * per_msg, want * per_msg, 0)
                );
                assert!(r.stalls.is_empty() && r.errors.is_empty(), "{r:?}");
                assert!(!r.series.is_empty());
                assert_eq!(
                    r.series.iter().map(|i| i.count).sum::<u64>(),
                    want * per_msg
                );
            }
            // Latency is from the publisher's schedule for every kind of
            // receiver (a queue member gets one message in N): a hop through
            // a server over loopback takes more than 5 µs.
            assert!(c.latency.p50_us > 5.0, "{} {:?}", c.name, c.latency);
            // The merged histogram holds every run's messages.
            assert_eq!(
                c.latency.count,
                c.repeats.iter().map(|r| r.received).sum::<u64>()
            );
            assert!(c.passed, "{} {:?}", c.name, c.repeats);
        }
        assert!(st.passed);
    }
    // Both loads passed: the knee was not reached; 1× is a lower bound.
    assert_eq!(sp.knee.max_factor, Some(1.0));
    assert!(!sp.knee.reached());
    let z = sp.sizing.unwrap();
    assert_eq!(z.headroom_pct, 0.0);
    assert_eq!(plan.machine.server_cpus[0].0, (s.pid() as u32));

    let dir = tempfile::tempdir().unwrap();
    let files = report::write(&plan, dir.path()).unwrap();
    // 2 steps × 3 classes of .hgrm, 1 + 3 + 3 charts, json, md.
    assert_eq!(files.iter().filter(|f| f.ends_with(".hgrm")).count(), 6);
    assert_eq!(files.iter().filter(|f| f.ends_with(".svg")).count(), 7);
    for f in &files {
        assert!(dir.path().join(f).metadata().unwrap().len() > 0, "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    assert!(json["machine"]["cpu_model"].is_string());
    assert!(json["machine"]["kernel"].is_string());
    assert_eq!(
        json["servers"][0]["server"]["shoal_version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(json["servers"][0]["server"]["server_name"]
        .as_str()
        .is_some_and(|n| !n.is_empty()));
    assert_eq!(json["workload"]["rpc"][0]["p99_ms"], 500.0);
    assert!(
        json["servers"][0]["steps"][0]["classes"][0]["repeats"][0]["series"][0]["p99_us"]
            .is_number()
    );
    let md = std::fs::read_to_string(dir.path().join("plan.md")).unwrap();
    assert!(md.contains("| maximum sustainable load | ≥ 1×"), "{md}");
    assert!(md.contains("not reached: raise --max-factor"), "{md}");
    let hgrm =
        std::fs::read_to_string(dir.path().join("hgrm/shoal-0.1.0/step01-rpc.hgrm")).unwrap();
    assert!(
        hgrm.contains(&format!(
            "Total count    = {:>12}]",
            sp.steps[0].classes[0].latency.count
        )),
        "{hgrm}"
    );
}

#[test]
fn compare_plans_both_servers_and_an_unmeetable_objective_is_the_knee() {
    let (a, b) = (Shoal::start(1, &[], None), Shoal::start(2, &[], None));
    // 1 µs at p99.9 cannot be met: every load fails, nothing is sustainable.
    let w = Workload::parse("[[rpc]]\nname='fast'\nrate=100\np999_ms=0.001\n").unwrap();
    let plan = plan::run(&params(vec![a.url(), b.url()], w, &[1.0], 1, 0.5), &|_| {}).unwrap();
    assert_eq!(plan.servers.len(), 2);
    assert_eq!(plan.servers[1].server.url, b.url());
    for sp in &plan.servers {
        assert_eq!(sp.knee.max_factor, None);
        assert_eq!(sp.knee.first_fail, Some(1.0));
        assert!(sp.sizing.is_none());
        let why = &sp.steps[0].classes[0].repeats[0].failures;
        assert!(
            why.iter().any(|f| f.contains("over the objective 1 µs")),
            "{why:?}"
        );
    }
    let md = report::markdown(&plan);
    assert!(
        md.contains("none: the lowest load tried already failed"),
        "{md}"
    );
    // One column per server.
    assert!(
        md.lines()
            .any(|l| l.starts_with("| | shoal") && l.matches("shoal").count() == 2),
        "{md}"
    );
}

#[test]
fn a_stall_is_a_finding_and_the_plan_goes_on() {
    let s = Shoal::start(1, &[], None);
    let w = Workload::parse("[[rpc]]\nname='rpc'\nrate=200\np99_ms=5000\n").unwrap();
    let pid = s.pid() as u32;
    // Pause the server for 1.2 s during the first run's sending.
    let pauser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(800));
        signal(pid, "-STOP");
        std::thread::sleep(std::time::Duration::from_millis(1200));
        signal(pid, "-CONT");
    });
    let plan = plan::run(&params(vec![s.url()], w, &[1.0, 0.5], 1, 2.5), &|_| {}).unwrap();
    pauser.join().unwrap();
    let sp = &plan.servers[0];
    let first = &sp.steps[0].classes[0];
    assert!(!first.passed);
    let stalls = sp.stalls();
    assert!(!stalls.is_empty(), "{:?}", first.repeats);
    let (idx, _, class, st) = &stalls[0];
    assert_eq!((*idx, class.as_str()), (1, "rpc"));
    assert!(st.resumed && st.secs >= 0.8 && st.secs < 3.0, "{st:?}");
    // Nothing lost: the server answered everything once it ran again.
    assert_eq!(first.repeats[0].lost, 0);
    // The next load ran and passed; the knee is below the stalled load.
    assert!(sp.steps[1].passed, "{:?}", sp.steps[1]);
    assert_eq!(sp.knee.max_factor, Some(0.5));
    let md = report::markdown(&plan);
    assert!(
        md.contains("step 1 (1×), class `rpc`: nothing arrived from"),
        "{md}"
    );
    assert!(md.contains("then traffic resumed"), "{md}");
}

#[test]
fn a_dead_server_is_reported_not_an_os_error() {
    let s = Shoal::start(1, &[], None);
    let w = Workload::parse("[[rpc]]\nname='rpc'\nrate=200\np99_ms=5000\n").unwrap();
    let pid = s.pid() as u32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        signal(pid, "-KILL");
    });
    let plan = plan::run(
        &params(vec![s.url()], w, &[1.0, 1.0, 1.0, 1.0], 1, 1.5),
        &|_| {},
    )
    .unwrap();
    killer.join().unwrap();
    let sp = &plan.servers[0];
    let r = &sp.steps[0].classes[0].repeats[0];
    assert!(r.lost > 0, "{r:?}");
    assert!(
        r.failures
            .iter()
            .any(|f| f.contains("closed the connection") || f.contains("could not send")),
        "{r:?}"
    );
    assert!(
        r.failures.iter().any(|f| f.contains("until it gave up")),
        "{r:?}"
    );
    // Two loads in a row could not connect: stepping stopped, saying why.
    assert_eq!(sp.steps.len(), 3);
    assert!(
        sp.steps[1].setup_errors[0].starts_with("could not connect to"),
        "{:?}",
        sp.steps[1]
    );
    assert!(
        sp.stopped
            .as_deref()
            .unwrap()
            .contains("did not accept connections"),
        "{:?}",
        sp.stopped
    );
    let md = report::markdown(&plan);
    assert!(md.contains("**Stopped early:**"), "{md}");
}

/// The `shoal-bench` binary, built on first use into this test's target
/// folder and profile: it belongs to another package, so cargo does not
/// build it for these tests by itself.
fn shoal_bench_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let shoal = std::path::Path::new(env!("CARGO_BIN_EXE_shoal"));
            let profile_dir = shoal.parent().unwrap();
            let target_dir = profile_dir.parent().unwrap();
            let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
                "debug" => "dev".to_string(),
                other => other.to_string(),
            };
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "shoal-bench", "--bin", "shoal-bench"])
                .arg("--profile")
                .arg(&profile)
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building shoal-bench failed");
            profile_dir.join("shoal-bench")
        })
        .clone()
}

/// A `shoal-bench worker` process on a loopback port, killed (by its PID)
/// when dropped.
struct BenchWorker {
    child: std::process::Child,
    addr: String,
}

impl BenchWorker {
    fn start() -> BenchWorker {
        use std::io::BufRead;
        let mut child = std::process::Command::new(shoal_bench_bin())
            .args(["worker", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn shoal-bench worker");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first
            .strip_prefix("shoal-bench worker listening on ")
            .unwrap_or_else(|| panic!("{first}"))
            .to_string();
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        BenchWorker { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BenchWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shoal-bench --url URL [--json] plan ARGS`, with its output.
fn bench_plan(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(shoal_bench_bin())
        .args(["--url", url, "--json", "plan"])
        .args(args)
        .output()
        .expect("run shoal-bench plan")
}

#[test]
fn two_workers_share_a_plan_and_their_histograms_merge_exactly() {
    let s = Shoal::start(2, &[], None);
    let (w1, w2) = (BenchWorker::start(), BenchWorker::start());
    let dir = tempfile::tempdir().unwrap();
    let workers = format!("{},{}", w1.addr, w2.addr);
    let pid = s.pid().to_string();
    let out = bench_plan(
        &s.url(),
        &[
            "--rate", "200", "--p99-ms", "500", "--requesters", "2", "--responders", "2",
            "--events-rate", "100", "--fanout", "2", "--loads", "0.5,1", "--repeats", "2",
            "--step-secs", "1", "--drain-ms", "1000", "--stall-ms", "400",
            "--server-pid", &pid, "--workers", &workers,
            "--out", dir.path().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 workers generate the load"), "{stderr}");
    let md = std::fs::read_to_string(dir.path().join("plan.md")).unwrap();
    assert!(md.contains("Load generated by 2 workers"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    let listed = json["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].as_str().unwrap().starts_with(&w1.addr));
    assert!(listed[1].as_str().unwrap().starts_with(&w2.addr));
    let steps = json["servers"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    for st in steps {
        assert_eq!(st["passed"], true, "{st}");
        for c in st["classes"].as_array().unwrap() {
            let per_msg = if c["name"] == "events" { 2 } else { 1 };
            let mut latency_total = 0;
            for r in c["repeats"].as_array().unwrap() {
                let ws = r["workers"].as_array().unwrap();
                assert_eq!(ws.len(), 2, "both workers took part: {r}");
                let mut starts = Vec::new();
                for (w, addr) in ws.iter().zip([&w1.addr, &w2.addr]) {
                    assert_eq!(w["worker"], addr.as_str());
                    assert!(n(&w["sent"]) > 0 && n(&w["received"]) > 0, "{w}");
                    assert_eq!(n(&w["received"]), n(&w["sent"]) * per_msg, "{w}");
                    assert_eq!(n(&w["latency_count"]), n(&w["received"]));
                    starts.push(w["start_unix_ms"].as_f64().unwrap());
                }
                // Merged counts are the workers' sums.
                for field in ["sent", "expected", "received"] {
                    assert_eq!(
                        n(&r[field]),
                        ws.iter().map(|w| n(&w[field])).sum::<u64>(),
                        "{field}"
                    );
                }
                let lc: u64 = ws.iter().map(|w| n(&w["latency_count"])).sum();
                assert_eq!(n(&r["latency"]["count"]), lc);
                // The load was split: the workers sent the step's rate
                // between them.
                let want = c["offered_rate"].as_f64().unwrap().round() as u64;
                assert!(n(&r["sent"]).abs_diff(want) <= 2, "{} vs {want}", r["sent"]);
                // They started together (one clock here).
                assert!((starts[0] - starts[1]).abs() < 50.0, "{starts:?}");
                latency_total += lc;
            }
            // The step's histogram is every run of every worker.
            assert_eq!(n(&c["latency"]["count"]), latency_total);
            let hgrm = std::fs::read_to_string(dir.path().join(format!(
                "hgrm/shoal-{}/step{:02}-{}.hgrm",
                env!("CARGO_PKG_VERSION"),
                n(&st["index"]),
                c["name"].as_str().unwrap()
            )))
            .unwrap();
            assert!(
                hgrm.contains(&format!("Total count    = {latency_total:>12}]")),
                "{hgrm}"
            );
            // The last row of the distribution counts them all, at the max.
            let last = hgrm
                .lines()
                .rev()
                .find(|l| !l.starts_with('#') && l.split_whitespace().count() == 3)
                .unwrap();
            let cols: Vec<&str> = last.split_whitespace().collect();
            assert_eq!(cols[2].parse::<u64>().unwrap(), latency_total, "{last}");
            let max_ms: f64 = cols[0].parse().unwrap();
            assert!(
                (max_ms * 1000.0 - c["latency"]["max_us"].as_f64().unwrap()).abs() <= 1.0,
                "{last} vs {}",
                c["latency"]["max_us"]
            );
        }
    }
}

#[test]
fn a_worker_that_dies_or_is_not_there_is_a_clear_error_not_a_hang() {
    let s = Shoal::start(1, &[], None);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().to_str().unwrap();
    // Not there: refused at the start, naming the address.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let w1 = BenchWorker::start();
    let t = std::time::Instant::now();
    let r = bench_plan(
        &s.url(),
        &["--rate", "100", "--p99-ms", "500", "--loads", "1", "--repeats", "1",
          "--step-secs", "0.5", "--workers", &format!("{},{gone}", w1.addr), "--out", out],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("worker {gone}: could not connect")),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(15));

    // Killed during a step: that step fails naming the worker, stepping
    // stops, the plan says why and exits 1, well before any timeout.
    let w2 = BenchWorker::start();
    let victim = w2.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        signal(victim, "-KILL");
    });
    let t = std::time::Instant::now();
    let r = bench_plan(
        &s.url(),
        &["--rate", "100", "--p99-ms", "500", "--loads", "1,1,1,1", "--repeats", "1",
          "--step-secs", "2", "--drain-ms", "500",
          "--workers", &format!("{},{}", w1.addr, w2.addr), "--out", out],
    );
    killer.join().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(
        err.contains(&format!("worker {}", w2.addr))
            && (err.contains("closed the connection") || err.contains("could not connect")),
        "{err}"
    );
    assert!(err.contains("a worker failed, the plan is incomplete"), "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("plan.json")).unwrap())
            .unwrap();
    let sp = &json["servers"][0];
    assert!(
        sp["stopped"].as_str().unwrap().contains("worker failed"),
        "{}",
        sp["stopped"]
    );
    // The failed step is not a finding about the server.
    assert!(sp["knee"]["first_fail"].is_null(), "{}", sp["knee"]);
    assert!(sp["steps"].as_array().unwrap().len() < 4);
    // The surviving worker still serves.
    drop(w2);
    assert_eq!(plan::worker::hello(std::slice::from_ref(&w1.addr)).unwrap().len(), 1);
}

#[test]
fn compare_alternates_the_servers_steps() {
    let (a, b) = (Shoal::start(1, &[], None), Shoal::start(1, &[], None));
    let w = Workload::parse("[[rpc]]\nname='rpc'\nrate=100\np99_ms=500\n").unwrap();
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let plan = plan::run(
        &params(vec![a.url(), b.url()], w, &[0.5, 1.0, 2.0], 1, 0.3),
        &|l| lines.lock().unwrap().push(l.to_string()),
    )
    .unwrap();
    let order: Vec<(usize, usize)> = plan.order.iter().map(|r| (r.server, r.step)).collect();
    assert_eq!(order, [(0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]);
    assert_eq!(plan.order[1].url, b.url());
    assert_eq!(plan.order[2].factor, 1.0);
    // The steps really ran in that order.
    let started: Vec<f64> = plan
        .order
        .iter()
        .map(|r| plan.servers[r.server].steps[r.step - 1].started_unix_ms)
        .collect();
    assert!(started.windows(2).all(|w| w[0] < w[1]), "{started:?}");
    // And the progress says which server each step is for, alternately.
    let steps: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("] step "))
        .cloned()
        .collect();
    assert_eq!(steps.len(), 6, "{steps:?}");
    for (i, l) in steps.iter().enumerate() {
        let url = if i % 2 == 0 { a.url() } else { b.url() };
        assert!(l.contains(&url) && l.contains(&format!("step {}", i / 2 + 1)), "{l}");
    }
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["order"][1]["server"], 1);
    let md = report::markdown(&plan);
    assert!(md.contains("Steps alternated between the servers, so a change of the machine during the plan hits both alike: A1, B1, A2, B2, A3, B3."), "{md}");
}

#[test]
fn a_wrong_server_pid_is_refused_at_the_start() {
    let s = Shoal::start(1, &[], None);
    let w = Workload::parse("[[rpc]]\nname='rpc'\nrate=100\np99_ms=500\n").unwrap();
    let mut p = params(vec![s.url()], w, &[1.0], 1, 0.3);
    let t = std::time::Instant::now();
    p.server_pids = vec![u32::MAX - 3];
    let e = plan::run(&p, &|_| {}).unwrap_err();
    assert!(e.contains("no such process"), "{e}");
    // A process that exists but is not the server (this test).
    p.server_pids = vec![std::process::id()];
    let e = plan::run(&p, &|_| {}).unwrap_err();
    assert!(
        e.contains("is not the server") && e.contains(&format!("PID {}", s.pid())),
        "{e}"
    );
    p.server_pids = vec![s.pid() as u32, 1];
    assert!(plan::run(&p, &|_| {}).unwrap_err().contains("2 PIDs for 1 server"));
    // Refused before any step ran.
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
    // The command line says so and exits 1.
    let r = bench_plan(
        &s.url(),
        &["--rate", "10", "--p99-ms", "5", "--server-pid", &(u32::MAX - 3).to_string()],
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no such process"));
}
