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
