//! Client TLS with a real client (async-nats) and a test CA generated here
//! with rcgen: TLS pub/sub, a client trusting another CA refused, mutual TLS
//! with and without a client certificate, plain clients refused.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// Writes `name.pem` and `name-key.pem` signed by `ca` into `dir`.
fn leaf(dir: &Path, name: &str, ca: &Ca, sans: &[&str]) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (ca("shoal test CA"), ca("another CA"));
    let ca_path = dir.path().join("ca.pem");
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&ca_path, ca1.cert.pem()).unwrap();
    std::fs::write(&other, ca2.cert.pem()).unwrap();
    let server = leaf(dir.path(), "server", &ca1, &["127.0.0.1", "localhost"]);
    let client = leaf(dir.path(), "client", &ca1, &["client"]);
    Pki {
        dir,
        ca: ca_path,
        other_ca: other,
        server,
        client,
    }
}

fn tls_server(p: &Pki, shards: usize, verify: bool) -> Shoal {
    let (cert, key, ca) = (
        p.server.0.to_str().unwrap(),
        p.server.1.to_str().unwrap(),
        p.ca.to_str().unwrap(),
    );
    let mut args = vec!["--tls", "--tlscert", cert, "--tlskey", key];
    if verify {
        args.extend(["--tlsverify", "--tlscacert", ca]);
    }
    Shoal::start(shards, &args, None)
}

async fn connect(
    s: &Shoal,
    root: &Path,
    client: Option<&(PathBuf, PathBuf)>,
) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(root.to_path_buf())
        .connection_timeout(Duration::from_secs(3));
    if let Some((c, k)) = client {
        opts = opts.add_client_certificate(c.clone(), k.clone());
    }
    tokio::time::timeout(Duration::from_secs(5), opts.connect(s.url()))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn pub_sub_over_tls() {
    let p = pki();
    for shards in SHARDS {
        let s = tls_server(&p, shards, false);
        let a = connect(&s, &p.ca, None).await.expect("TLS client connects");
        let b = connect(&s, &p.ca, None).await.expect("TLS client connects");
        let mut sub = a.subscribe("secure.>").await.unwrap();
        sync_interest(&a, &b).await;
        // Large enough to span many TLS records.
        let big = bytes::Bytes::from(vec![b'x'; 200_000]);
        for i in 0..50 {
            b.publish(format!("secure.{i}"), big.clone()).await.unwrap();
        }
        b.flush().await.unwrap();
        for i in 0..50 {
            let m = next_msg(&mut sub).await;
            assert_eq!(m.subject.as_str(), format!("secure.{i}"));
            assert_eq!(m.payload.len(), 200_000, "shards={shards}");
        }
    }
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let p = pki();
    let s = tls_server(&p, 1, false);
    assert!(connect(&s, &p.other_ca, None).await.is_err());
    // The server keeps serving good clients.
    assert!(connect(&s, &p.ca, None).await.is_ok());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let p = pki();
    for shards in SHARDS {
        let s = tls_server(&p, shards, true);
        // Without a certificate: refused.
        assert!(connect(&s, &p.ca, None).await.is_err(), "shards={shards}");
        // With one from the CA: works.
        let c = connect(&s, &p.ca, Some(&p.client))
            .await
            .expect("mTLS client connects");
        let mut sub = c.subscribe("m").await.unwrap();
        c.publish("m", "ok".into()).await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(&next_msg(&mut sub).await.payload[..], b"ok");
        // A certificate from another CA: refused.
        let other = ca("rogue");
        let rogue = leaf(p.dir.path(), "rogue", &other, &["rogue"]);
        assert!(connect(&s, &p.ca, Some(&rogue)).await.is_err());
    }
}

#[tokio::test]
async fn plain_clients_are_refused_when_tls_is_required() {
    let p = pki();
    let s = tls_server(&p, 1, false);
    let mut raw = Raw::connect(&s.addr).await;
    raw.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await;
    raw.expect_closed_after("-ERR 'Secure Connection - TLS Required'")
        .await;
    // INFO says so up front.
    let info = info_line(&s.addr).await;
    assert!(info.contains("\"tls_required\":true"), "{info}");
}

fn routes(s: &Shoal) -> u64 {
    s.http_get("/routez").1["num_routes"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn routes_over_mutual_tls() {
    let p = pki();
    let conf = format!(
        "cluster {{ name: sec, listen: \"127.0.0.1:-1\", tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }} }}",
        p.server.0.display(),
        p.server.1.display(),
        p.ca.display()
    );
    let a = Shoal::start(2, &["-m", "-1"], Some(&conf));
    let seed = a.route_url();
    let b = Shoal::start(2, &["-m", "-1", "--routes", &seed], Some(&conf));
    eventually(Duration::from_secs(15), "a TLS route", || {
        routes(&a) == 1 && routes(&b) == 1
    });
    // Messages cross the encrypted link, both ways, many TLS records' worth.
    let (ca_, cb) = (a.client().await, b.client().await);
    let mut sa = ca_.subscribe("over.tls").await.unwrap();
    let mut sb = cb.subscribe("over.tls").await.unwrap();
    sync_interest(&ca_, &cb).await;
    sync_interest(&cb, &ca_).await;
    let big = bytes::Bytes::from(vec![b'z'; 100_000]);
    for _ in 0..20 {
        cb.publish("over.tls", big.clone()).await.unwrap();
        ca_.publish("over.tls", big.clone()).await.unwrap();
    }
    cb.flush().await.unwrap();
    ca_.flush().await.unwrap();
    for _ in 0..40 {
        assert_eq!(next_msg(&mut sa).await.payload.len(), 100_000);
        assert_eq!(next_msg(&mut sb).await.payload.len(), 100_000);
    }
    // A node without route TLS is refused (its plain INFO is not TLS).
    let plain = Shoal::start(
        1,
        &[
            "-m",
            "-1",
            "--cluster",
            "nats://127.0.0.1:-1",
            "--cluster_name",
            "sec",
            "--routes",
            &seed,
        ],
        None,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(routes(&plain), 0);
    assert_eq!(routes(&a), 1);
}

/// A server with `tls { handshake_first: ... }` and the given client setup.
fn tls_first_server(p: &Pki, mode: &str) -> Shoal {
    let conf = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", handshake_first: {mode} }}",
        p.server.0.display(),
        p.server.1.display()
    );
    Shoal::start(2, &[], Some(&conf))
}

async fn connect_tls_first(s: &Shoal, p: &Pki) -> Result<async_nats::Client, String> {
    let opts = async_nats::ConnectOptions::new()
        .tls_first()
        .add_root_certificates(p.ca.clone())
        .connection_timeout(Duration::from_secs(3));
    tokio::time::timeout(Duration::from_secs(5), opts.connect(s.url()))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// `handshake_first: true` (nats-server 2.10): the client starts TLS at once
/// and gets the INFO encrypted; a client waiting for a plain INFO gets
/// nothing it can use. `handshake_first: auto` (or a delay) serves both.
#[tokio::test]
async fn tls_handshake_first_and_auto() {
    let p = pki();
    let s = tls_first_server(&p, "true");
    let a = connect_tls_first(&s, &p)
        .await
        .expect("TLS-first client connects");
    let mut sub = a.subscribe("first").await.unwrap();
    a.flush().await.unwrap();
    a.publish("first", "hi".into()).await.unwrap();
    assert_eq!(&next_msg(&mut sub).await.payload[..], b"hi");
    assert!(
        connect(&s, &p.ca, None).await.is_err(),
        "a classic client expects a plain INFO first"
    );

    for mode in ["auto", "\"300ms\""] {
        let s = tls_first_server(&p, mode);
        let first = connect_tls_first(&s, &p).await;
        assert!(first.is_ok(), "{mode}: TLS-first client: {:?}", first.err());
        let classic = connect(&s, &p.ca, None).await;
        assert!(
            classic.is_ok(),
            "{mode}: classic client: {:?}",
            classic.err()
        );
    }
}
