//! `/metrics`: the `/varz` figures in Prometheus text format, named as
//! prometheus-nats-exporter names nats-server's (`gnatsd_varz_*`), so
//! existing dashboards and alerts keep working, plus per-shard and per-route
//! series (`shoal_shard_*`, `shoal_route_*`) that nats-server does not have.

use super::json::{resident_bytes, State};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

type Labels = Vec<(String, String)>;

/// A registry built from the current figures (the values live in the shards'
/// atomics; nothing is kept between scrapes).
pub fn render(state: &State) -> String {
    let c = &state.control;
    let st = c.stats();
    let routes = c.routes();
    let mut reg = Registry::default();
    let mut gauge = |name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    let n = |v: u64| v as i64;
    gauge(
        "gnatsd_varz_connections",
        "Client connections",
        n(st.connections),
    );
    gauge(
        "gnatsd_varz_total_connections",
        "Client connections since start",
        n(st.total_connections),
    );
    gauge(
        "gnatsd_varz_subscriptions",
        "Client subscriptions",
        n(st.subscriptions),
    );
    gauge(
        "gnatsd_varz_in_msgs",
        "Messages received from clients and routes",
        n(st.in_msgs),
    );
    gauge(
        "gnatsd_varz_out_msgs",
        "Messages delivered to clients",
        n(st.out_msgs),
    );
    gauge(
        "gnatsd_varz_in_bytes",
        "Payload bytes received",
        n(st.in_bytes),
    );
    gauge(
        "gnatsd_varz_out_bytes",
        "Payload bytes delivered",
        n(st.out_bytes),
    );
    gauge(
        "gnatsd_varz_slow_consumers",
        "Connections closed as slow consumers",
        n(st.slow_consumers),
    );
    gauge("gnatsd_varz_routes", "Route links", routes.len() as i64);
    gauge(
        "gnatsd_varz_mem",
        "Resident memory in bytes",
        resident_bytes() as i64,
    );
    gauge(
        "gnatsd_varz_uptime",
        "Seconds since start",
        c.uptime().as_secs() as i64,
    );
    gauge(
        "gnatsd_varz_max_payload",
        "Largest message accepted",
        c.config().max_payload as i64,
    );
    gauge(
        "shoal_healthy",
        "1 when /healthz reports ok",
        i64::from(c.is_ready() && !c.is_lame_duck()),
    );
    let cpu: Gauge<f64, AtomicU64> = Gauge::default();
    cpu.set(state.cpu_percent());
    reg.register(
        "gnatsd_varz_cpu",
        "CPU use since the previous scrape, percent of one CPU",
        cpu,
    );

    let shard = |name: &str, help: &str, reg: &mut Registry, values: Vec<(usize, u64)>| {
        let fam = Family::<Labels, Gauge>::default();
        for (i, v) in values {
            fam.get_or_create(&vec![("shard".into(), i.to_string())])
                .set(v as i64);
        }
        reg.register(name, help, fam);
    };
    let per = c.shard_stats();
    let col = |f: fn(&shoal_net::stats::StatsSnapshot) -> u64| -> Vec<(usize, u64)> {
        per.iter().enumerate().map(|(i, s)| (i, f(s))).collect()
    };
    type Col = fn(&shoal_net::stats::StatsSnapshot) -> u64;
    let series: [(&str, &str, Col); 6] = [
        (
            "shoal_shard_connections",
            "Client connections per shard",
            |s| s.connections,
        ),
        ("shoal_shard_in_msgs", "Messages received per shard", |s| {
            s.in_msgs
        }),
        (
            "shoal_shard_out_msgs",
            "Messages delivered per shard",
            |s| s.out_msgs,
        ),
        (
            "shoal_shard_batches_in",
            "Message batches received from other shards",
            |s| s.batches_in,
        ),
        (
            "shoal_shard_batches_out",
            "Message batches sent to other shards",
            |s| s.batches_out,
        ),
        (
            "shoal_shard_stalls",
            "Times the shard made no progress for a second with work waiting",
            |s| s.stalls,
        ),
    ];
    for (name, help, f) in series {
        shard(name, help, &mut reg, col(f));
    }

    let route = |name: &str,
                 help: &str,
                 reg: &mut Registry,
                 f: fn(&shoal_net::route::RouteStats) -> &AtomicU64| {
        let fam = Family::<Labels, Gauge>::default();
        for r in &routes {
            fam.get_or_create(&vec![
                ("remote_id".into(), r.peer.server_id.clone()),
                ("remote_name".into(), r.peer.server_name.clone()),
            ])
            .set(f(&r.stats).load(Relaxed) as i64);
        }
        reg.register(name, help, fam);
    };
    route(
        "shoal_route_in_msgs",
        "Messages received on a route",
        &mut reg,
        |s| &s.in_msgs,
    );
    route(
        "shoal_route_out_msgs",
        "Messages sent on a route",
        &mut reg,
        |s| &s.out_msgs,
    );
    route(
        "shoal_route_subscriptions",
        "Interest announced by the peer",
        &mut reg,
        |s| &s.subscriptions,
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}
