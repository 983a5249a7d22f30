//! TLS for client connections and route links, with rustls (ring provider).
//!
//! As in nats-server, the server sends its INFO in plain text (with
//! `tls_required`), then the client starts the TLS handshake; everything
//! after is encrypted. A connection's outbound frames are still appended to
//! one plaintext buffer; `Client::flush` seals it into a ciphertext buffer
//! that the usual non-blocking send path writes. Reads go through
//! `read_plaintext`. The handshake is bounded by the configured timeout.
//!
//! This module knows rustls sessions and sockets, not connections: the
//! connection-level read (`outbound::read_conn`) and the flush that seals
//! (`Client::flush`) call into it, never the other way round.

use crate::runtime::TcpStream;
use bytes::{BufMut, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use shoal_core::config::TlsConfig;
use std::cell::RefCell;
use std::io::{BufReader, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {path}"));
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| format!("invalid PEM in {path}: {e}"))?
        .ok_or_else(|| format!("no private key in {path}"))
}

/// The CA certificates of `ca_file` (`missing` is the error without one).
fn read_roots(t: &TlsConfig, missing: &str) -> Result<rustls::RootCertStore, String> {
    let ca = t.ca_file.as_deref().ok_or(missing)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("invalid CA certificate in {ca}: {e}"))?;
    }
    Ok(roots)
}

/// The server side of TLS (clients, or routes accepted), from the
/// configuration's PEM files.
pub fn server_config(t: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if t.verify {
        let roots = read_roots(t, "tls verify needs ca_file (--tlscacert)")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(read_certs(&t.cert_file)?, read_key(&t.key_file)?)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Arc::new(config))
}

/// The dialing side of route TLS: trusts `ca_file` (the system has no say
/// in a private cluster) and presents this node's own certificate, so peers
/// with `verify` accept it.
pub fn client_config(t: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = read_roots(t, "route TLS needs ca_file to verify peers")?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(read_certs(&t.cert_file)?, read_key(&t.key_file)?)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Arc::new(config))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("client sent plain text (TLS required)")]
    Plaintext,
    #[error("TLS handshake timeout")]
    Timeout,
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

async fn write_all(stream: &Rc<RefCell<TcpStream>>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = futures_lite::future::poll_fn(|cx| {
            let mut s = stream.borrow_mut();
            futures_lite::AsyncWrite::poll_write(std::pin::Pin::new(&mut *s), cx, data)
        })
        .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

/// Writes whatever rustls has queued (handshake messages, alerts).
async fn send_pending(
    stream: &Rc<RefCell<TcpStream>>,
    conn: &mut rustls::ServerConnection,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    write_all(stream, &out).await
}

/// Runs the server side of the handshake on a fresh connection.
pub(crate) async fn accept(
    stream: &Rc<RefCell<TcpStream>>,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> Result<rustls::ServerConnection, HandshakeError> {
    let handshake = async {
        let mut conn = rustls::ServerConnection::new(config)?;
        // Outbound plaintext is sealed in `Client::flush`; the connection
        // bounds it (`max_pending`), not rustls.
        conn.set_buffer_limit(None);
        let mut buf = vec![0u8; 16 * 1024];
        let mut first = true;
        while conn.is_handshaking() {
            if conn.wants_write() {
                send_pending(stream, &mut conn).await?;
                continue;
            }
            let n = futures_lite::future::poll_fn(|cx| {
                let mut s = stream.borrow_mut();
                futures_lite::AsyncRead::poll_read(std::pin::Pin::new(&mut *s), cx, &mut buf)
            })
            .await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            // A TLS record starts with 0x16 (handshake); anything else is a
            // client speaking plain NATS.
            if first && buf[0] != 0x16 {
                return Err(HandshakeError::Plaintext);
            }
            first = false;
            conn.read_tls(&mut &buf[..n])?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the client why (an alert), then give up.
                let _ = send_pending(stream, &mut conn).await;
                return Err(e.into());
            }
        }
        send_pending(stream, &mut conn).await?;
        Ok(conn)
    };
    futures_lite::future::or(handshake, async {
        crate::runtime::sleep(timeout).await;
        Err(HandshakeError::Timeout)
    })
    .await
}

/// Moves what rustls decrypted from `cipher` (the bytes just read) into
/// `plain`. Returns false when the peer closed the TLS session.
pub(crate) fn read_plaintext(
    conn: &mut rustls::Connection,
    cipher: &[u8],
    plain: &mut BytesMut,
) -> Result<bool, rustls::Error> {
    let mut cipher = cipher;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // rustls takes a bounded amount per call and holds a bounded amount
        // of plaintext: feed, decrypt, drain, until the read is consumed.
        if !cipher.is_empty() {
            conn.read_tls(&mut cipher)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        conn.process_new_packets()?;
        loop {
            match conn.reader().read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Ok(false),
            }
        }
        if cipher.is_empty() {
            return Ok(true);
        }
    }
}

/// Encrypts `plain` (then empties it) and appends every record rustls has
/// queued to `wire`.
pub(crate) fn seal(conn: &mut rustls::Connection, plain: &mut BytesMut, wire: &mut BytesMut) {
    if !plain.is_empty() {
        // With no buffer limit, rustls takes everything.
        let _ = conn.writer().write_all(plain);
        plain.clear();
    }
    let mut w = wire.writer();
    while conn.wants_write() {
        if conn.write_tls(&mut w).is_err() {
            break;
        }
    }
}
