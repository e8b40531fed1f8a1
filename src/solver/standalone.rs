//! Standalone mode: acme-bridge answers the CA itself.
//!
//! For http-01 it serves `/.well-known/acme-challenge/<token>` over plain HTTP
//! (`--http-address`, default `[::]:80`); for tls-alpn-01 it completes TLS
//! handshakes with ALPN `acme-tls/1`, presenting the challenge's ready certificate
//! for the SNI name asked for (`--tls-address`, default `[::]:443`). The listener
//! is bound in [`Solver::start`], before any order exists, so a taken port fails
//! the run before anything reaches the CA. A challenge is ready as soon as it is
//! served; the listener stops once every challenge is cleaned up, and at the
//! latest in [`Solver::finish`] (or when the solver is dropped).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::challenge::{Challenge, ChallengeKind, ChallengeType};
use crate::error::Error;

/// The ALPN protocol of tls-alpn-01 (RFC 8737 §6.2).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where http-01 resources live.
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// The longest a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one connection may stay open.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);
/// How long stopping a listener may take before its task is aborted.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Linux's "address family not supported" (no IPv6 on this host).
const EAFNOSUPPORT: i32 = 97;

/// The default `--http-address`: every address, port 80.
pub const DEFAULT_HTTP_ADDRESS: &str = "[::]:80";
/// The default `--tls-address`: every address, port 443.
pub const DEFAULT_TLS_ADDRESS: &str = "[::]:443";

/// What the listeners serve, shared with their tasks.
#[derive(Debug, Default)]
struct Served {
    /// http-01: token → body (the key authorization).
    http: Mutex<HashMap<String, String>>,
    /// tls-alpn-01: SNI name (lower case) → the challenge's certificate.
    tls: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Served {
    fn http_body(&self, token: &str) -> Option<String> {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn tls_key(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sni)
            .cloned()
    }

    fn is_empty(&self) -> bool {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            && self
                .tls
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
    }
}

/// A running listener task.
struct Listener {
    what: &'static str,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// `--mode standalone`: serves http-01 or tls-alpn-01 itself.
pub struct StandaloneSolver {
    http_address: SocketAddr,
    tls_address: SocketAddr,
    served: Arc<Served>,
    listeners: Vec<Listener>,
    ready: VecDeque<Readiness>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for StandaloneSolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneSolver")
            .field("http_address", &self.http_address)
            .field("tls_address", &self.tls_address)
            .field(
                "listening",
                &self.listeners.iter().map(|l| l.addr).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl StandaloneSolver {
    /// Serves http-01 on `http_address` and tls-alpn-01 on `tls_address`; only the
    /// one the run's challenge type needs is bound, in [`Solver::start`].
    pub fn new(http_address: SocketAddr, tls_address: SocketAddr) -> Self {
        Self {
            http_address,
            tls_address,
            served: Arc::default(),
            listeners: Vec::new(),
            ready: VecDeque::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    /// The addresses the listeners are bound to (after [`Solver::start`]).
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Stops every listener and waits until its socket is closed.
    async fn stop(&mut self) {
        for listener in self.listeners.drain(..) {
            let _ = listener.stop.send(());
            let abort = listener.task.abort_handle();
            if tokio::time::timeout(STOP_LIMIT, listener.task)
                .await
                .is_err()
            {
                abort.abort();
            }
            tracing::info!("stopped serving {} on {}", listener.what, listener.addr);
        }
    }

    fn tls_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ChallengeCertificates {
                served: self.served.clone(),
            }));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        // Every validation is a full handshake that picks its certificate by SNI.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// Puts one challenge on the listener.
    fn serve(&self, challenge: &Challenge) -> Result<(), String> {
        match &challenge.kind {
            ChallengeKind::Http01 { http } => {
                self.served
                    .http
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(http.file_name.clone(), http.body.clone());
                tracing::info!(
                    "{} ({}): serving http://{}{}",
                    challenge.domain,
                    challenge.id,
                    self.http_address,
                    http.path
                );
                Ok(())
            }
            ChallengeKind::TlsAlpn01 { tls_alpn } => {
                let cert = CertificateDer::from_pem_slice(tls_alpn.certificate_pem.as_bytes())
                    .map_err(|e| format!("the tls-alpn-01 certificate is unreadable: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(tls_alpn.private_key_pem.as_bytes())
                    .map_err(|e| format!("the tls-alpn-01 key is unreadable: {e}"))?;
                let key = self
                    .provider
                    .key_provider
                    .load_private_key(key)
                    .map_err(|e| format!("the tls-alpn-01 key is unusable: {e}"))?;
                self.served
                    .tls
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        tls_alpn.sni.to_ascii_lowercase(),
                        Arc::new(CertifiedKey::new(vec![cert], key)),
                    );
                tracing::info!(
                    "{} ({}): serving the tls-alpn-01 certificate for SNI {} on {}",
                    challenge.domain,
                    challenge.id,
                    tls_alpn.sni,
                    self.tls_address
                );
                Ok(())
            }
            ChallengeKind::Dns01 { .. } => {
                Err("--mode standalone cannot serve a dns-01 challenge".into())
            }
        }
    }

    /// Takes one challenge off the listener.
    fn unserve(&self, challenge: &Challenge) {
        match &challenge.kind {
            ChallengeKind::Http01 { http } => {
                self.served
                    .http
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&http.file_name);
            }
            ChallengeKind::TlsAlpn01 { tls_alpn } => {
                self.served
                    .tls
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&tls_alpn.sni.to_ascii_lowercase());
            }
            ChallengeKind::Dns01 { .. } => {}
        }
    }
}

impl Drop for StandaloneSolver {
    fn drop(&mut self) {
        // Normally stopped already; this covers a run that ended before finish.
        for listener in &self.listeners {
            listener.task.abort();
        }
    }
}

/// Binds `addr`, explaining the usual causes of failure. The default `[::]`
/// falls back to `0.0.0.0` on hosts without IPv6.
async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener, Error> {
    let first = TcpListener::bind(addr).await;
    let result = match first {
        Err(e)
            if addr.ip().is_unspecified()
                && addr.is_ipv6()
                && (matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                ) || e.raw_os_error() == Some(EAFNOSUPPORT)) =>
        {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::debug!("{addr}: {e}; listening on {v4} instead");
            TcpListener::bind(v4).await
        }
        other => other,
    };
    result.map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => {
                format!("is another web server running? use {flag} to listen elsewhere")
            }
            io::ErrorKind::PermissionDenied => format!(
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; or use {flag} with a higher port that the CA's port is forwarded to"
            ),
            io::ErrorKind::AddrNotAvailable => {
                format!("no interface has that address; check {flag}")
            }
            _ => format!("check {flag}"),
        };
        Error::Config(format!(
            "cannot listen on {addr} to serve {what}: {e} — {hint}"
        ))
    })
}

impl Solver for StandaloneSolver {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        let (what, addr, flag) = match run.challenge_type {
            ChallengeType::Http01 => ("http-01", self.http_address, "--http-address"),
            ChallengeType::TlsAlpn01 => ("tls-alpn-01", self.tls_address, "--tls-address"),
            ChallengeType::Dns01 => {
                return Err(Error::Config(
                    "--mode standalone serves http-01 and tls-alpn-01, not dns-01 (DNS records need your DNS provider: use --mode json, handler or manual)".into(),
                ));
            }
        };
        let listener = bind(addr, what, flag).await?;
        let local = listener.local_addr().unwrap_or(addr);
        let (stop, stopped) = oneshot::channel();
        let served = self.served.clone();
        let task = match run.challenge_type {
            ChallengeType::TlsAlpn01 => {
                let acceptor = tokio_rustls::TlsAcceptor::from(self.tls_config()?);
                tokio::spawn(accept_loop(listener, stopped, move |stream, peer| {
                    tls_connection(acceptor.clone(), stream, peer)
                }))
            }
            _ => tokio::spawn(accept_loop(listener, stopped, move |stream, peer| {
                http_connection(served.clone(), stream, peer)
            })),
        };
        tracing::info!("serving {what} on {local}");
        self.listeners.push(Listener {
            what,
            addr: local,
            stop,
            task,
        });
        Ok(())
    }

    async fn present(&mut self, challenges: &[Challenge], _: &Deadline) -> Result<(), Error> {
        for challenge in challenges {
            self.ready.push_back(match self.serve(challenge) {
                // The listener is up: served means ready.
                Ok(()) => Readiness::Ready(challenge.id.clone()),
                Err(reason) => Readiness::Failed {
                    id: challenge.id.clone(),
                    reason,
                },
            });
        }
        Ok(())
    }

    async fn next_ready(&mut self, _: &Deadline) -> Result<Readiness, Error> {
        super::next_queued(&mut self.ready, "standalone")
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        for d in done {
            self.unserve(d.challenge);
            tracing::debug!(
                "{} ({}): no longer served ({:?})",
                d.challenge.domain,
                d.challenge.id,
                d.outcome
            );
        }
        if self.served.is_empty() {
            self.stop().await;
        }
        Ok(())
    }

    async fn finish(&mut self, _: Result<&Issued, &Error>) -> Result<(), Error> {
        self.stop().await;
        Ok(())
    }
}

/// Accepts connections until told to stop; then closes the listening socket and
/// ends every open connection before returning.
async fn accept_loop<F, Fut>(listener: TcpListener, mut stop: oneshot::Receiver<()>, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = handle(stream, peer);
                    connections.spawn(async move {
                        if tokio::time::timeout(CONNECTION_LIMIT, connection).await.is_err() {
                            tracing::info!("{peer}: connection closed after {CONNECTION_LIMIT:?}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one HTTP/1.1 connection.
async fn http_connection(served: Arc<Served>, stream: TcpStream, peer: SocketAddr) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(&served, &request, peer);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!("http-01: {peer}: {e}");
    }
}

/// The answer to one http-01 request: the key authorization for an announced
/// token, 404 for anything else.
fn respond<B>(served: &Served, request: &Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-");
    let body = path
        .strip_prefix(CHALLENGE_PREFIX)
        .and_then(|token| served.http_body(token));
    let method = request.method();
    let (status, body) = match (method, body) {
        (&Method::GET | &Method::HEAD, Some(body)) => (StatusCode::OK, body),
        (&Method::GET | &Method::HEAD, None) => (StatusCode::NOT_FOUND, "not found\n".into()),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n".into(),
        ),
    };
    tracing::info!(
        "http-01: {peer} {method} {path} (Host {host}) -> {}",
        status.as_u16()
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// Completes one tls-alpn-01 handshake and closes the connection.
async fn tls_connection(acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream, peer: SocketAddr) {
    match acceptor.accept(stream).await {
        Ok(mut tls) => {
            let (_, connection) = tls.get_ref();
            let sni = connection.server_name().unwrap_or("-").to_owned();
            tracing::info!(
                "tls-alpn-01: {peer} SNI {sni}, ALPN acme-tls/1 -> challenge certificate served"
            );
            // The handshake is the whole validation (RFC 8737 §3).
            let _ = tls.shutdown().await;
        }
        Err(e) => tracing::info!("tls-alpn-01: {peer} handshake refused: {e}"),
    }
}

/// Picks the challenge certificate by SNI, for clients offering `acme-tls/1` only.
#[derive(Debug)]
struct ChallengeCertificates {
    served: Arc<Served>,
}

impl ResolvesServerCert for ChallengeCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offers_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let Some(sni) = hello.server_name().map(str::to_ascii_lowercase) else {
            tracing::info!("tls-alpn-01: a client sent no SNI name; refused");
            return None;
        };
        if !offers_acme {
            tracing::info!("tls-alpn-01: SNI {sni} without ALPN acme-tls/1; refused");
            return None;
        }
        let key = self.served.tls_key(&sni);
        if key.is_none() {
            tracing::info!("tls-alpn-01: no challenge for SNI {sni}; refused");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::ChallengeSource;

    const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn challenge(id: &str, name: &str, token: &str, challenge_type: ChallengeType) -> Challenge {
        Challenge::compute(
            ChallengeSource {
                id: id.into(),
                domain: name,
                identifier: name,
                wildcard: false,
                token,
                challenge_type,
            },
            THUMB,
        )
        .unwrap()
    }

    fn run(challenge_type: ChallengeType) -> RunInfo {
        RunInfo {
            name: "a.test".into(),
            domains: vec!["a.test".into()],
            challenge_type,
            timeout: Duration::from_secs(60),
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_announced_tokens_only_and_stops_after_cleanup() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut solver = StandaloneSolver::new(loopback, loopback);
        solver.start(&run(ChallengeType::Http01)).await.unwrap();
        let addr = solver.local_addresses()[0];
        let c = challenge("c1", "a.test", "tok1", ChallengeType::Http01);
        let deadline = Deadline::after(Duration::from_secs(60));
        solver
            .present(std::slice::from_ref(&c), &deadline)
            .await
            .unwrap();
        assert_eq!(
            solver.next_ready(&deadline).await.unwrap(),
            Readiness::Ready("c1".into())
        );

        let ok = get(addr, "/.well-known/acme-challenge/tok1").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("content-type: text/plain"), "{ok}");
        assert!(ok.ends_with(&c.key_authorization), "{ok}");
        for other in [
            "/.well-known/acme-challenge/tok2",
            "/",
            "/.well-known/acme-challenge/",
        ] {
            let answer = get(addr, other).await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{other}: {answer}");
        }

        solver
            .cleanup(&[Done {
                challenge: &c,
                outcome: crate::protocol::Outcome::Valid,
                problem: None,
            }])
            .await
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
        std::net::TcpListener::bind(addr).expect("the port is free again");
        solver
            .finish(Err(&Error::Internal("x".into())))
            .await
            .unwrap();
    }

    /// Accepts any server certificate and remembers the one presented.
    #[derive(Debug)]
    struct Capture {
        seen: Mutex<Option<Vec<u8>>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    }

    impl rustls::client::danger::ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            *self.seen.lock().unwrap() = Some(end_entity.to_vec());
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        // webpki refuses to parse the critical acmeIdentifier extension, and
        // which certificate is presented is all these tests look at.
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// A handshake to `addr` with `sni` and `alpn`: the certificate presented, or
    /// the error.
    async fn handshake(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> Result<Vec<u8>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let capture = Arc::new(Capture {
            seen: Mutex::new(None),
            provider: provider.clone(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(capture.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ACME_TLS_ALPN));
        Ok(capture.seen.lock().unwrap().clone().unwrap())
    }

    #[tokio::test]
    async fn tls_alpn_presents_the_challenge_certificate_by_sni_only_for_acme_tls() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut solver = StandaloneSolver::new(loopback, loopback);
        solver.start(&run(ChallengeType::TlsAlpn01)).await.unwrap();
        let addr = solver.local_addresses()[0];
        let a = challenge("c1", "a.test", "tokA", ChallengeType::TlsAlpn01);
        let b = challenge("c2", "b.test", "tokB", ChallengeType::TlsAlpn01);
        let deadline = Deadline::after(Duration::from_secs(60));
        solver
            .present(&[a.clone(), b.clone()], &deadline)
            .await
            .unwrap();
        for _ in 0..2 {
            assert!(matches!(
                solver.next_ready(&deadline).await.unwrap(),
                Readiness::Ready(_)
            ));
        }
        let der = |c: &Challenge| {
            let ChallengeKind::TlsAlpn01 { tls_alpn } = &c.kind else {
                panic!("not tls-alpn-01")
            };
            CertificateDer::from_pem_slice(tls_alpn.certificate_pem.as_bytes())
                .unwrap()
                .to_vec()
        };
        assert_eq!(
            handshake(addr, "a.test", &[ACME_TLS_ALPN]).await,
            Ok(der(&a))
        );
        assert_eq!(
            handshake(addr, "B.TEST", &[b"h2", ACME_TLS_ALPN]).await,
            Ok(der(&b))
        );
        assert!(
            handshake(addr, "c.test", &[ACME_TLS_ALPN]).await.is_err(),
            "unknown SNI"
        );
        assert!(handshake(addr, "a.test", &[]).await.is_err(), "no ALPN");
        assert!(
            handshake(addr, "a.test", &[b"http/1.1"]).await.is_err(),
            "other ALPN"
        );

        let done = |c| Done {
            challenge: c,
            outcome: crate::protocol::Outcome::Valid,
            problem: None,
        };
        solver.cleanup(&[done(&a)]).await.unwrap();
        assert!(
            handshake(addr, "a.test", &[ACME_TLS_ALPN]).await.is_err(),
            "cleaned up"
        );
        assert_eq!(
            handshake(addr, "b.test", &[ACME_TLS_ALPN]).await,
            Ok(der(&b))
        );
        solver.cleanup(&[done(&b)]).await.unwrap();
        std::net::TcpListener::bind(addr).expect("the port is free again");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_config_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let mut solver = StandaloneSolver::new(addr, addr);
        let err = solver.start(&run(ChallengeType::Http01)).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("--http-address"), "{message}");
        let err = solver
            .start(&run(ChallengeType::TlsAlpn01))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--tls-address"), "{err}");
        let err = solver.start(&run(ChallengeType::Dns01)).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}
