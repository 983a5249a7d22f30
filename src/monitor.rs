//! The HTTP monitoring endpoint (`-m/--http_port`): nats-server's JSON
//! shapes, so tools that scrape nats-server read Shoal.
//!
//! It runs on its own thread with a single-threaded tokio runtime and hyper,
//! reading only atomics and the membership snapshot: a scrape never touches a
//! shard's thread, so monitoring cannot slow the message path.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use shoal_net::ServerControl;
use std::net::SocketAddr;
use std::time::SystemTime;
use tracing::{error, info};

/// Binds the monitoring port and serves it on a thread of its own.
pub fn start(control: ServerControl, host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((host, port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("shoal-monitor".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!("cannot start the monitoring runtime: {e}");
                    return;
                }
            };
            rt.block_on(serve(control, listener));
        })?;
    info!("Starting http monitor on http://{addr}");
    Ok(addr)
}

async fn serve(control: ServerControl, listener: std::net::TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!("monitoring listener: {e}");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let control = control.clone();
        tokio::task::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&control, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn route(control: &ServerControl, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path().trim_end_matches('/') {
        "/healthz" => healthz(control),
        "/varz" => reply(StatusCode::OK, varz(control)),
        "/routez" => reply(StatusCode::OK, routez(control)),
        "" => reply(
            StatusCode::OK,
            json!({ "endpoints": ["/varz", "/routez", "/healthz"] }),
        ),
        _ => reply(StatusCode::NOT_FOUND, json!({ "error": "not found" })),
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// nats-server's `/healthz`: `{"status":"ok"}`, or 503 with the reason.
/// A clustered node is healthy once it has the cluster's interest.
fn healthz(control: &ServerControl) -> Response<Full<Bytes>> {
    if control.is_ready() && !control.is_lame_duck() {
        reply(StatusCode::OK, json!({ "status": "ok" }))
    } else {
        let why = if control.is_lame_duck() {
            "lame duck mode"
        } else {
            "waiting for the cluster's interest"
        };
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "error": why }),
        )
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn varz(control: &ServerControl) -> Value {
    let st = control.stats();
    let cfg = control.config();
    let addr = control.client_addr();
    json!({
        "server_id": control.server_id(),
        "server_name": control.server_name(),
        "version": shoal_net::VERSION,
        "proto": 1,
        "host": addr.ip().to_string(),
        "port": addr.port(),
        "max_connections": cfg.max_connections,
        "max_payload": cfg.max_payload,
        "max_pending": cfg.max_pending,
        "connections": st.connections,
        "total_connections": st.total_connections,
        "routes": control.routes().len(),
        "in_msgs": st.in_msgs,
        "out_msgs": st.out_msgs,
        "in_bytes": st.in_bytes,
        "out_bytes": st.out_bytes,
        "slow_consumers": st.slow_consumers,
        "subscriptions": st.subscriptions,
        "uptime": humantime::format_duration(std::time::Duration::from_secs(control.uptime().as_secs())).to_string(),
        "now": now(),
        "connect_urls": control.connect_urls(),
        "cluster": {
            "name": cfg.cluster.name.clone().unwrap_or_default(),
            "urls": cfg.cluster.routes,
        },
    })
}

fn routez(control: &ServerControl) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let routes: Vec<Value> = control
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
                "start": humantime::format_rfc3339_seconds(r.since).to_string(),
                "pending_size": r.stats.pending_bytes.load(Relaxed),
                "in_msgs": r.stats.in_msgs.load(Relaxed),
                "out_msgs": r.stats.out_msgs.load(Relaxed),
                "in_bytes": r.stats.in_bytes.load(Relaxed),
                "out_bytes": r.stats.out_bytes.load(Relaxed),
                "subscriptions": r.stats.subscriptions.load(Relaxed),
                "shard": r.id.shard,
            })
        })
        .collect();
    json!({
        "server_id": control.server_id(),
        "server_name": control.server_name(),
        "now": now(),
        "num_routes": routes.len(),
        "routes": routes,
    })
}
