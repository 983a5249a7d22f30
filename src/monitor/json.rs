//! The JSON endpoints, field for field as nats-server names them.

use serde_json::{json, Value};
use shoal_net::snapshot::{ConnSnapshot, ShardSnapshot};
use shoal_net::ServerControl;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long a scrape waits for the shards' answers.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints share: the server handle, request counts and the last
/// CPU sample.
pub struct State {
    pub control: ServerControl,
    pub addr: SocketAddr,
    pub started: SystemTime,
    requests: Mutex<BTreeMap<String, u64>>,
    cpu_sample: Mutex<(Instant, f64)>,
}

impl State {
    pub fn new(control: ServerControl, addr: SocketAddr) -> State {
        State {
            started: SystemTime::now() - control.uptime(),
            control,
            addr,
            requests: Mutex::new(BTreeMap::new()),
            cpu_sample: Mutex::new((Instant::now(), process_cpu_secs())),
        }
    }

    /// Counts a request (`http_req_stats`).
    pub fn count(&self, path: &str) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry(path.to_owned()).or_default() += 1;
        }
    }

    /// CPU use of the process since the previous call, in percent of one CPU
    /// (nats-server's `cpu`).
    pub fn cpu_percent(&self) -> f64 {
        let Ok(mut last) = self.cpu_sample.lock() else {
            return 0.0;
        };
        let now = (Instant::now(), process_cpu_secs());
        let wall = now.0.duration_since(last.0).as_secs_f64();
        let pct = if wall > 0.0 {
            (now.1 - last.1) / wall * 100.0
        } else {
            0.0
        };
        *last = now;
        (pct * 10.0).round() / 10.0
    }

    pub fn snapshot(&self, subs: bool) -> Vec<ShardSnapshot> {
        self.control.snapshot(subs, SNAPSHOT_TIMEOUT)
    }
}

/// User plus system CPU time of this process, from /proc.
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// Resident memory of this process in bytes (nats-server's `mem`).
pub fn resident_bytes() -> u64 {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// nats-server's duration style: `1d2h3m4s`, `3m4s`, `4s`.
pub fn nats_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (v, unit, force) in [(days, "d", false), (h, "h", days > 0), (m, "m", s >= 3600)] {
        if v > 0 || force {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out.push_str(&format!("{sec}s"));
    out
}

/// Round trip as Go prints a duration (`1.234ms`, `56µs`).
fn go_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.3}ms", us / 1000.0)
    } else {
        format!("{:.3}s", us / 1e6)
    }
}

pub fn healthz(state: &State) -> (bool, Value) {
    let c = &state.control;
    if c.is_ready() && !c.is_lame_duck() {
        (true, json!({ "status": "ok" }))
    } else {
        let why = if c.is_lame_duck() {
            "lame duck mode"
        } else {
            "waiting for the cluster's interest"
        };
        (false, json!({ "status": "unavailable", "error": why }))
    }
}

pub fn varz(state: &State) -> Value {
    let c = &state.control;
    let st = c.stats();
    let cfg = c.config();
    let addr = c.client_addr();
    let routes = c.routes();
    let shards: Vec<Value> = c
        .shard_stats()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": i,
                "connections": s.connections,
                "total_connections": s.total_connections,
                "subscriptions": s.subscriptions,
                "in_msgs": s.in_msgs,
                "out_msgs": s.out_msgs,
                "in_bytes": s.in_bytes,
                "out_bytes": s.out_bytes,
                "slow_consumers": s.slow_consumers,
                "batches_in": s.batches_in,
                "batches_out": s.batches_out,
                "stalls": s.stalls,
                "routes": routes.iter().filter(|r| r.id.shard as usize == i).count(),
            })
        })
        .collect();
    let requests = state.requests.lock().map(|r| r.clone()).unwrap_or_default();
    json!({
        "server_id": c.server_id(),
        "server_name": c.server_name(),
        "version": shoal_net::NATS_VERSION,
        "shoal_version": shoal_net::VERSION,
        "proto": 1,
        "host": addr.ip().to_string(),
        "port": addr.port(),
        "max_connections": cfg.max_connections,
        "ping_interval": cfg.ping_interval.as_nanos() as u64,
        "ping_max": cfg.ping_max,
        "http_host": state.addr.ip().to_string(),
        "http_port": state.addr.port(),
        "auth_timeout": cfg.auth_timeout.as_secs_f64(),
        "max_control_line": cfg.max_control_line,
        "max_payload": cfg.max_payload,
        "max_pending": cfg.max_pending,
        "write_deadline": cfg.write_deadline.as_nanos() as u64,
        "lame_duck_duration": cfg.lame_duck_duration.as_nanos() as u64,
        "start": rfc3339(state.started),
        "now": rfc3339(SystemTime::now()),
        "uptime": nats_duration(c.uptime()),
        "mem": resident_bytes(),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": state.cpu_percent(),
        "connections": st.connections,
        "total_connections": st.total_connections,
        "routes": routes.len(),
        "remotes": routes.len(),
        "in_msgs": st.in_msgs,
        "out_msgs": st.out_msgs,
        "in_bytes": st.in_bytes,
        "out_bytes": st.out_bytes,
        "slow_consumers": st.slow_consumers,
        "stalls": st.stalls,
        "interest_sync_timeouts": st.interest_sync_timeouts,
        "invariant_violations": st.invariant_violations,
        "metadata": c.config().metadata,
        "subscriptions": st.subscriptions,
        "http_req_stats": requests,
        "connect_urls": c.connect_urls(),
        "cluster": {
            "name": cfg.cluster.name.clone().unwrap_or_default(),
            "addr": cfg.cluster.listen.clone().unwrap_or_default(),
            // Never the route passwords (nats-server redacts them too).
            "urls": cfg
                .cluster
                .routes
                .iter()
                .map(|r| shoal_cluster::RouteUrl::parse(r)
                    .map_or_else(|_| "(invalid route URL)".to_string(), |u| u.redacted()))
                .collect::<Vec<_>>(),
        },
        "shards": shards,
    })
}

fn conn_json(c: &ConnSnapshot, now: SystemTime, with_subs: bool) -> Value {
    let mut v = json!({
        "cid": c.cid,
        "kind": "Client",
        "type": "nats",
        "ip": c.addr.ip().to_string(),
        "port": c.addr.port(),
        "start": rfc3339(c.start),
        "last_activity": rfc3339(c.last_activity),
        "rtt": c.rtt.map(go_duration).unwrap_or_default(),
        "uptime": nats_duration(now.duration_since(c.start).unwrap_or_default()),
        "idle": nats_duration(now.duration_since(c.last_activity).unwrap_or_default()),
        "pending_bytes": c.pending_bytes,
        "in_msgs": c.in_msgs,
        "out_msgs": c.out_msgs,
        "in_bytes": c.in_bytes,
        "out_bytes": c.out_bytes,
        "subscriptions": c.subscriptions,
        "shard": c.shard,
    });
    for (k, val) in [
        ("name", &c.name),
        ("lang", &c.lang),
        ("version", &c.version),
        ("authorized_user", &c.user),
    ] {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    if with_subs {
        let mut list = c.subscriptions_list.clone();
        list.sort();
        v["subscriptions_list"] = json!(list);
    }
    v
}

/// `/connz?limit=&offset=&sort=&subs=`: nats-server's defaults (limit 1024,
/// sort by cid ascending; every other sort descending).
pub fn connz(state: &State, q: &HashMap<String, String>) -> Result<Value, String> {
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let subs = matches!(
        q.get("subs").map(String::as_str),
        Some("1" | "true" | "detail")
    );
    let sort = q.get("sort").map(String::as_str).unwrap_or("cid");
    let mut conns: Vec<ConnSnapshot> = state
        .snapshot(subs)
        .into_iter()
        .flat_map(|s| s.conns)
        .collect();
    let now = SystemTime::now();
    // Nanoseconds from `a` to `b` (0 when `b` is earlier).
    let span = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default().as_nanos();
    let epoch = SystemTime::UNIX_EPOCH;
    let key = |c: &ConnSnapshot| -> u128 {
        match sort {
            "cid" => c.cid as u128,
            "start" => span(epoch, c.start),
            "subs" => c.subscriptions as u128,
            "pending" => c.pending_bytes as u128,
            "msgs_to" => c.out_msgs as u128,
            "msgs_from" => c.in_msgs as u128,
            "bytes_to" => c.out_bytes as u128,
            "bytes_from" => c.in_bytes as u128,
            "last" => span(epoch, c.last_activity),
            "idle" => span(c.last_activity, now),
            "uptime" => span(c.start, now),
            "rtt" => c.rtt.unwrap_or_default().as_nanos(),
            _ => 0,
        }
    };
    let valid = [
        "cid",
        "start",
        "subs",
        "pending",
        "msgs_to",
        "msgs_from",
        "bytes_to",
        "bytes_from",
        "last",
        "idle",
        "uptime",
        "rtt",
    ];
    if !valid.contains(&sort) {
        return Err(format!("invalid sorting option: {sort}"));
    }
    conns.sort_by_key(|c| (key(c), c.cid));
    if sort != "cid" {
        conns.reverse();
    }
    let total = conns.len();
    let page: Vec<Value> = conns
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| conn_json(c, now, subs))
        .collect();
    Ok(json!({
        "server_id": state.control.server_id(),
        "now": rfc3339(now),
        "num_connections": page.len(),
        "total": total,
        "offset": offset,
        "limit": limit,
        "connections": page,
    }))
}

/// `/subsz?subs=1`: subscription counts and the match cache (summed over
/// shards).
pub fn subsz(state: &State, q: &HashMap<String, String>) -> Value {
    let subs = matches!(
        q.get("subs").map(String::as_str),
        Some("1" | "true" | "detail")
    );
    let shards = state.snapshot(subs);
    let (hits, misses): (u64, u64) = shards
        .iter()
        .fold((0, 0), |(h, m), s| (h + s.cache_hits, m + s.cache_misses));
    let matches = hits + misses;
    let mut v = json!({
        "server_id": state.control.server_id(),
        "now": rfc3339(SystemTime::now()),
        "num_subscriptions": state.control.stats().subscriptions,
        "num_cache": shards.iter().map(|s| s.cache_entries).sum::<usize>(),
        "num_matches": matches,
        "cache_hit_rate": if matches > 0 { hits as f64 / matches as f64 } else { 0.0 },
        "shards": shards.iter().map(|s| json!({
            "id": s.id,
            "index_entries": s.index_entries,
            "cache_entries": s.cache_entries,
            "cache_hits": s.cache_hits,
            "cache_misses": s.cache_misses,
        })).collect::<Vec<_>>(),
    });
    if subs {
        let mut list: Vec<Value> = shards
            .iter()
            .flat_map(|s| s.conns.iter())
            .flat_map(|c| {
                c.subscriptions_list.iter().map(move |entry| {
                    let (subject, queue) = match entry.split_once(' ') {
                        Some((s, q)) => (s, Some(q)),
                        None => (entry.as_str(), None),
                    };
                    let mut e = json!({ "subject": subject, "cid": c.cid });
                    if let Some(q) = queue {
                        e["qgroup"] = json!(q);
                    }
                    e
                })
            })
            .collect();
        list.sort_by(|a, b| a["subject"].as_str().cmp(&b["subject"].as_str()));
        v["subscriptions_list"] = json!(list);
    }
    v
}

pub fn routez(state: &State) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    // Queued bytes live with the link on its shard: asked, not shared.
    let pending: HashMap<_, _> = state
        .snapshot(false)
        .into_iter()
        .flat_map(|s| s.route_pending)
        .collect();
    let routes: Vec<Value> = state
        .control
        .routes()
        .into_iter()
        .map(|r| {
            json!({
                "rid": r.id.slot,
                "remote_id": r.peer.server_id,
                "remote_name": r.peer.server_name,
                "did_solicit": r.peer.solicited,
                "ip": r.addr.ip().to_string(),
                "port": r.addr.port(),
                "url": r.peer.route_url,
                "start": rfc3339(r.since),
                "pending_size": pending.get(&r.id).copied().unwrap_or(0),
                "in_msgs": r.stats.in_msgs.load(Relaxed),
                "out_msgs": r.stats.out_msgs.load(Relaxed),
                "in_bytes": r.stats.in_bytes.load(Relaxed),
                "out_bytes": r.stats.out_bytes.load(Relaxed),
                "subscriptions": r.stats.subscriptions.load(Relaxed),
                "refused_msgs": r.stats.refused_msgs.load(Relaxed),
                "shard": r.id.shard,
            })
        })
        .collect();
    json!({
        "server_id": state.control.server_id(),
        "server_name": state.control.server_name(),
        "now": rfc3339(SystemTime::now()),
        "num_routes": routes.len(),
        "routes": routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_nats_server() {
        assert_eq!(nats_duration(Duration::from_secs(4)), "4s");
        assert_eq!(nats_duration(Duration::from_secs(184)), "3m4s");
        assert_eq!(nats_duration(Duration::from_secs(3600 + 4)), "1h0m4s");
        assert_eq!(
            nats_duration(Duration::from_secs(86400 + 7200 + 180 + 4)),
            "1d2h3m4s"
        );
        assert_eq!(go_duration(Duration::from_micros(56)), "56µs");
        assert_eq!(go_duration(Duration::from_micros(1234)), "1.234ms");
    }

    #[test]
    fn process_figures_are_read() {
        assert!(resident_bytes() > 0);
        assert!(process_cpu_secs() >= 0.0);
    }
}
