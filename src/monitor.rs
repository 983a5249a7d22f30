//! The HTTP monitoring endpoint (`-m/--http_port`, `http_port` in config):
//! nats-server's JSON shapes and field names, so tools that scrape
//! nats-server read Shoal, plus Prometheus text at `/metrics`.
//!
//! It runs on its own thread with a single-threaded tokio runtime and hyper.
//! Totals come from the shards' atomics; per-connection figures are asked of
//! each shard over its control channel (answered between two read buffers),
//! so a scrape never makes the message path share or lock anything. Waiting
//! for the shards happens on a few worker threads started with the monitor:
//! a request never needs a new thread, so a process out of threads (a flood
//! of connections elsewhere) answers 503 instead of panicking (tokio's
//! `spawn_blocking` panics when it cannot start a thread, and a panic aborts
//! the process).

mod json;
mod metrics;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use shoal_net::ServerControl;
use std::collections::HashMap;
use std::net::SocketAddr;
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
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!("cannot start the monitoring runtime: {e}");
                    return;
                }
            };
            rt.block_on(serve(control, listener, addr));
        })?;
    info!("Starting http monitor on http://{addr}");
    Ok(addr)
}

async fn serve(control: ServerControl, listener: std::net::TcpListener, addr: SocketAddr) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!("monitoring listener: {e}");
            return;
        }
    };
    let state = std::sync::Arc::new(json::State::new(control, addr));
    let jobs = start_workers(state);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let jobs = jobs.clone();
        tokio::task::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let jobs = jobs.clone();
                async move {
                    // Shards answer snapshot requests from their own
                    // threads; waiting for them must not block this one.
                    let (tx, rx) = flume::bounded(1);
                    let resp = match jobs.try_send((req, tx)) {
                        Ok(()) => rx.recv_async().await.unwrap_or_else(|_| busy()),
                        Err(_) => busy(),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

/// Worker threads answering requests, and requests that may wait for one
/// (more are answered 503 at once rather than pile up).
const WORKERS: usize = 2;
const QUEUE: usize = 64;

type Job = (
    Request<hyper::body::Incoming>,
    flume::Sender<Response<Full<Bytes>>>,
);

/// Starts the workers; requests go to them through the returned queue. A
/// worker the OS cannot start is logged; with none at all, every request is
/// answered 503 (the queue has no receiver).
fn start_workers(state: std::sync::Arc<json::State>) -> flume::Sender<Job> {
    let (tx, rx) = flume::bounded::<Job>(QUEUE);
    for _ in 0..WORKERS {
        let (rx, state) = (rx.clone(), state.clone());
        let spawned = std::thread::Builder::new()
            .name("shoal-monitor-worker".into())
            .spawn(move || {
                for (req, reply_to) in rx.iter() {
                    let _ = reply_to.send(route(&state, &req));
                }
            });
        if let Err(e) = spawned {
            error!("cannot start a monitoring worker thread: {e}");
        }
    }
    tx
}

fn busy() -> Response<Full<Bytes>> {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "monitoring is busy"}),
    )
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn route(state: &json::State, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let q = query(req);
    let path = req.uri().path().trim_end_matches('/');
    // Only the endpoints are counted (as nats-server's `http_req_stats`):
    // counting any path asked for would let a scanner grow the map forever.
    if ENDPOINTS.contains(&path) {
        state.count(if path.is_empty() { "/" } else { path });
    }
    match path {
        "/healthz" => {
            let (ok, body) = json::healthz(state);
            reply(
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                body,
            )
        }
        "/varz" => reply(StatusCode::OK, json::varz(state)),
        "/connz" => match json::connz(state, &q) {
            Ok(body) => reply(StatusCode::OK, body),
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({ "error": e })),
        },
        "/subsz" | "/subscriptionsz" => reply(StatusCode::OK, json::subsz(state, &q)),
        "/routez" => reply(StatusCode::OK, json::routez(state)),
        "/metrics" => Response::builder()
            .header(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics::render(state))))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        "" => reply(
            StatusCode::OK,
            json!({ "endpoints": ["/varz", "/connz", "/subsz", "/routez", "/healthz", "/metrics"] }),
        ),
        _ => reply(StatusCode::NOT_FOUND, json!({ "error": "not found" })),
    }
}

/// Every path served (after trimming a trailing `/`).
const ENDPOINTS: [&str; 8] = [
    "",
    "/healthz",
    "/varz",
    "/connz",
    "/subsz",
    "/subscriptionsz",
    "/routez",
    "/metrics",
];

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
