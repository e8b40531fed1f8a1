//! The HTTPS transport under instant-acme: one pooled connection, system trust
//! roots plus `--ca-bundle`, and a little bookkeeping that saves requests.
//!
//! - The directory is fetched once per run; later reads are served from memory.
//! - Every `Replay-Nonce` the CA hands out is kept until a request spends it, so a
//!   `HEAD newNonce` is only sent when no unspent nonce is left ([RFC 8555 §7.2]).
//! - `Retry-After` of the last response is remembered for polite polling.
//! - Requests and new connections are counted for the benchmark and the debug log.
//!
//! [RFC 8555 §7.2]: https://www.rfc-editor.org/rfc/rfc8555#section-7.2

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error as AcmeError};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why the transport could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The CA bundle could not be read or holds no usable certificate.
    #[error("cannot use CA bundle {path}: {detail}")]
    CaBundle {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

/// A shared HTTPS client for one ACME server. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    client: HyperClient<Counting<HttpsConnector<HttpConnector>>, BodyWrapper<Bytes>>,
    connections: Arc<AtomicU32>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    directory_url: String,
    directory: Option<Bytes>,
    new_nonce_url: Option<String>,
    nonces: Vec<String>,
    retry_after: Option<SystemTime>,
    alternates: Vec<String>,
    requests: u32,
}

impl Transport {
    /// A client trusting the system's roots plus every certificate in `ca_bundle`.
    pub fn new(directory_url: &str, ca_bundle: Option<&Path>) -> Result<Self, TransportError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::debug!("skipping a system trust root: {err}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!("{added} system trust roots loaded, {ignored} ignored");
        if let Some(path) = ca_bundle {
            let bundle_err = |detail: String| TransportError::CaBundle {
                path: path.display().to_string(),
                detail,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bundle_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bundle_err(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bundle_err("no usable certificate in the file".into()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector({
                // Without TCP_NODELAY every POST waits ~40 ms for a delayed ACK
                // (Nagle): the JWS body goes out in a second write.
                let mut tcp = HttpConnector::new();
                tcp.enforce_http(false);
                tcp.set_nodelay(true);
                tcp
            });
        let connections = Arc::new(AtomicU32::new(0));
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(Counting {
                inner: connector,
                count: connections.clone(),
            });
        Ok(Self {
            client,
            connections,
            state: Arc::new(Mutex::new(State {
                directory_url: directory_url.to_owned(),
                ..State::default()
            })),
        })
    }

    /// Fetches the directory (once) and returns its body.
    pub(crate) async fn directory(&self) -> Result<Bytes, AcmeError> {
        if let Some(body) = self.lock().directory.clone() {
            return Ok(body);
        }
        let url = self.lock().directory_url.clone();
        let req = Request::get(&url)
            .header(http::header::USER_AGENT, user_agent())
            .body(BodyWrapper::default())?;
        let rsp = self.send(req).await?;
        let status = rsp.parts.status;
        let body = collect(rsp).await?;
        if !status.is_success() {
            return Err(AcmeError::Other(
                format!(
                    "the ACME directory {url} answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )
                .into(),
            ));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&body)?;
        let mut state = self.lock();
        state.new_nonce_url = parsed["newNonce"].as_str().map(str::to_owned);
        state.directory = Some(body.clone());
        Ok(body)
    }

    /// How long the CA asked us to wait, from its last `Retry-After`.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let at = self.lock().retry_after?;
        Some(at.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// `Link: <…>;rel="alternate"` URLs of the last response ([RFC 8555 §7.4.2]).
    ///
    /// [RFC 8555 §7.4.2]: https://www.rfc-editor.org/rfc/rfc8555#section-7.4.2
    pub(crate) fn alternates(&self) -> Vec<String> {
        self.lock().alternates.clone()
    }

    /// POSTs a JWS we signed ourselves and returns the status and body. Nonces are
    /// taken from and returned to the pool like every other request's.
    pub(crate) async fn post_jose(
        &self,
        url: &str,
        sign: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), AcmeError> {
        let nonce = self.nonce().await?;
        let body = sign(&nonce).ok_or(AcmeError::Crypto)?;
        let req = Request::post(url)
            .header(http::header::USER_AGENT, user_agent())
            .header(http::header::CONTENT_TYPE, "application/jose+json")
            .body(BodyWrapper::from(body))?;
        let rsp = self.handle(req).await?;
        let status = rsp.parts.status;
        Ok((status, collect(rsp).await?))
    }

    /// A fresh nonce: an unspent one from the pool, else from `newNonce`.
    async fn nonce(&self) -> Result<String, AcmeError> {
        let (pooled, url) = {
            let mut state = self.lock();
            (state.nonces.pop(), state.new_nonce_url.clone())
        };
        if let Some(nonce) = pooled {
            return Ok(nonce);
        }
        let url = url.ok_or(AcmeError::Str("the directory has no newNonce URL"))?;
        let req = Request::head(&url)
            .header(http::header::USER_AGENT, user_agent())
            .body(BodyWrapper::default())?;
        self.send(req).await?;
        self.lock()
            .nonces
            .pop()
            .ok_or(AcmeError::Str("the CA sent no Replay-Nonce"))
    }

    /// Requests sent over the network so far.
    pub fn requests(&self) -> u32 {
        self.lock().requests
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send(&self, req: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, AcmeError> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let rsp = self
            .client
            .request(req)
            .await
            .map_err(|e| AcmeError::Other(Box::new(ConnectError(uri.to_string(), e))))?;
        tracing::debug!(%method, %uri, status = %rsp.status(), "ACME request");
        let mut state = self.lock();
        state.requests += 1;
        state.alternates = rsp
            .headers()
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(alternate_links)
            .collect();
        state.retry_after = rsp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if let Some(nonce) = rsp
            .headers()
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
        {
            state.nonces.push(nonce.to_owned());
        }
        drop(state);
        Ok(BytesResponse::from(rsp))
    }

    /// Answers locally what needs no network, otherwise sends the request.
    async fn handle(&self, req: Request<BodyWrapper<Bytes>>) -> Result<BytesResponse, AcmeError> {
        let url = req.uri().to_string();
        if req.method() == Method::GET && url == self.lock().directory_url {
            let body = self.directory().await?;
            return Ok(local_response(StatusCode::OK, None, body));
        }
        if req.method() == Method::HEAD {
            let mut state = self.lock();
            if state.new_nonce_url.as_deref() == Some(url.as_str())
                && let Some(nonce) = state.nonces.pop()
            {
                return Ok(local_response(StatusCode::OK, Some(nonce), Bytes::new()));
            }
        }
        if req.method() == Method::POST {
            // The JWS spends a nonce: forget it so it is never handed out twice.
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if let Some(nonce) = jws_nonce(&bytes) {
                self.lock().nonces.retain(|n| *n != nonce);
            }
            let req = Request::from_parts(parts, BodyWrapper::from(bytes.to_vec()));
            return self.send(req).await;
        }
        self.send(req).await
    }
}

impl instant_acme::HttpClient for Transport {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, AcmeError>> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.handle(req).await })
    }
}

/// A connector that counts the connections it opens.
#[derive(Clone)]
struct Counting<C> {
    inner: C,
    count: Arc<AtomicU32>,
}

impl<C: tower_service::Service<http::Uri>> tower_service::Service<http::Uri> for Counting<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.call(uri)
    }
}

/// A connection-level failure, with the URL it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {0}: {1}")]
struct ConnectError(String, #[source] hyper_util::client::legacy::Error);

fn local_response(status: StatusCode, nonce: Option<String>, body: Bytes) -> BytesResponse {
    let mut rsp = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(nonce) = nonce {
        rsp = rsp.header("replay-nonce", nonce);
    }
    BytesResponse::from(rsp.body(Full::new(body)).expect("a valid local response"))
}

async fn collect(mut rsp: BytesResponse) -> Result<Bytes, AcmeError> {
    rsp.body.into_bytes().await.map_err(AcmeError::Other)
}

/// The targets of `rel="alternate"` links in one `Link` header value.
fn alternate_links(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .any(|(k, v)| k.trim() == "rel" && v.trim().trim_matches('"') == "alternate")
                .then(|| target.to_owned())
        })
        .collect()
}

/// The nonce in a flattened JWS's protected header.
fn jws_nonce(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Jws {
        protected: String,
    }
    #[derive(serde::Deserialize)]
    struct Protected {
        nonce: Option<String>,
    }
    let jws: Jws = serde_json::from_slice(body).ok()?;
    let header = BASE64_URL_SAFE_NO_PAD.decode(jws.protected).ok()?;
    serde_json::from_slice::<Protected>(&header).ok()?.nonce
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate_parse(value),
    }
}

fn httpdate_parse(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format).ok()?;
    Some(at.assume_utc().into())
}

/// `acme-bridge/VERSION`, sent on every request.
pub(crate) fn user_agent() -> &'static str {
    concat!("acme-bridge/", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let soon = parse_retry_after("3").unwrap();
        let wait = soon.duration_since(SystemTime::now()).unwrap();
        assert!(wait <= Duration::from_secs(3) && wait > Duration::from_secs(1));
        let date = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            date.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            784_111_777
        );
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn alternate_links_are_found_among_others() {
        let value = r#"<https://ca/cert/1/1>;rel="alternate", <https://ca/dir>;rel="index", <https://ca/cert/1/2>; rel=alternate"#;
        assert_eq!(
            alternate_links(value),
            ["https://ca/cert/1/1", "https://ca/cert/1/2"]
        );
    }

    #[test]
    fn the_nonce_is_read_from_the_protected_header() {
        let protected =
            BASE64_URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","nonce":"abc","url":"u"}"#);
        let body = format!(r#"{{"protected":"{protected}","payload":"","signature":"x"}}"#);
        assert_eq!(jws_nonce(body.as_bytes()).as_deref(), Some("abc"));
        assert_eq!(jws_nonce(b"not json"), None);
    }
}
