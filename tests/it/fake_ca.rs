//! ARI edge cases ([RFC 9773]) of the library's ACME adapter, against a small in-process
//! fake ACME server.
//!
//! The fake exists because the real servers cannot produce these answers: Pebble 2.4.0
//! has no ARI at all, and acme2certifier neither enforces `replaces` (it never answers
//! `alreadyReplaced`) nor sends `explanationURL`. It serves only what instant-acme needs
//! for an account, a `newOrder` and a `renewalInfo` query, checks no signature, and
//! records every `newOrder` payload and every certificate id it is asked about.
//!
//! [RFC 9773]: https://www.rfc-editor.org/rfc/rfc9773

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use acme_bridge::acme::{Acme, OrderOptions, Session};
use acme_bridge::names::DomainName;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyIdMethod, KeyPair};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::ParsedExtension;

/// The example of RFC 9773 §4.1: this AKI `keyIdentifier` and this serial (DER, with
/// its leading zero) make the certificate id [`RFC_CERT_ID`].
const RFC_AKI: [u8; 20] = [
    0x69, 0x88, 0x5b, 0x6b, 0x87, 0x46, 0x40, 0x41, 0xe1, 0xb3, 0x7b, 0x84, 0x7b, 0xa0, 0xae, 0x2c,
    0xde, 0x01, 0xc8, 0xd4,
];
const RFC_SERIAL: [u8; 4] = [0x87, 0x65, 0x43, 0x21];
const RFC_CERT_ID: &str = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
const ALREADY_REPLACED: &str = "urn:ietf:params:acme:error:alreadyReplaced";

/// How the fake answers a `newOrder` that carries `replaces`.
#[derive(Clone, Copy)]
enum Replaces {
    /// 409 `alreadyReplaced` (RFC 9773 §5).
    AlreadyReplaced,
    /// Creates the order but leaves `replaces` out of the order object.
    NotEchoed,
}

struct FakeCa {
    base: String,
    replaces: Replaces,
    /// Decoded `newOrder` payloads, in arrival order.
    orders: Mutex<Vec<Value>>,
    /// The certificate ids of `GET renewalInfo/<id>`.
    renewal_queries: Mutex<Vec<String>>,
    nonce: AtomicU64,
    /// The PEM file of the CA that signed the fake's TLS certificate.
    bundle: tempfile::NamedTempFile,
}

impl FakeCa {
    /// Serves HTTPS on 127.0.0.1 with a certificate from a fresh CA.
    async fn start(replaces: Replaces) -> Arc<Self> {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let tls_key = KeyPair::generate().unwrap();
        let tls_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&tls_key, &Issuer::new(ca_params, ca_key))
            .unwrap();
        let bundle = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bundle.path(), ca_cert.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![tls_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(tls_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ca = Arc::new(Self {
            base: format!("https://{}", listener.local_addr().unwrap()),
            replaces,
            orders: Mutex::default(),
            renewal_queries: Mutex::default(),
            nonce: AtomicU64::new(0),
            bundle,
        });
        let server = ca.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, ca) = (acceptor.clone(), server.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| ca.clone().handle(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ca
    }

    fn directory_url(&self) -> String {
        format!("{}/dir", self.base)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let b = &self.base;
        let mut retry_after = None;
        let (status, location, doc) = match (&method, path.as_str()) {
            (&Method::GET, "/dir") => (
                200,
                None,
                json!({
                    "newNonce": format!("{b}/nonce"),
                    "newAccount": format!("{b}/account"),
                    "newOrder": format!("{b}/order"),
                    "revokeCert": format!("{b}/revoke"),
                    "keyChange": format!("{b}/key-change"),
                    "renewalInfo": format!("{b}/renewal-info"),
                }),
            ),
            (&Method::HEAD | &Method::GET, "/nonce") => (200, None, Value::Null),
            (&Method::POST, "/account") => (
                201,
                Some(format!("{b}/account/1")),
                json!({"status": "valid", "orders": format!("{b}/account/1/orders")}),
            ),
            (&Method::POST, "/order") => self.new_order(&body),
            (&Method::GET, p) if p.starts_with("/renewal-info/") => {
                let id = p.trim_start_matches("/renewal-info/").to_owned();
                self.renewal_queries.lock().unwrap().push(id);
                retry_after = Some("21600");
                let window = json!({
                    "start": datetime!(2030-01-02 03:04:05 UTC).format(&Rfc3339).unwrap(),
                    "end": datetime!(2030-01-04 03:04:05 UTC).format(&Rfc3339).unwrap(),
                });
                let doc =
                    json!({"suggestedWindow": window, "explanationURL": "https://ca.test/why"});
                (200, None, doc)
            }
            _ => (
                404,
                None,
                json!({"type": "urn:ietf:params:acme:error:malformed"}),
            ),
        };
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let mut rsp = Response::builder()
            .status(status)
            .header("Replay-Nonce", format!("fake-nonce-{nonce}"))
            .header("Cache-Control", "no-store");
        if status >= 400 {
            rsp = rsp.header("Content-Type", "application/problem+json");
        } else if !doc.is_null() {
            rsp = rsp.header("Content-Type", "application/json");
        }
        if let Some(location) = location {
            rsp = rsp.header("Location", location);
        }
        if let Some(seconds) = retry_after {
            rsp = rsp.header("Retry-After", seconds);
        }
        let body = if doc.is_null() {
            Bytes::new()
        } else {
            Bytes::from(doc.to_string())
        };
        Ok(rsp.body(Full::new(body)).unwrap())
    }

    /// Records the JWS payload and answers as [`Replaces`] says.
    fn new_order(&self, body: &[u8]) -> (u16, Option<String>, Value) {
        let jws: Value = serde_json::from_slice(body).unwrap();
        let payload = B64.decode(jws["payload"].as_str().unwrap()).unwrap();
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        let mut orders = self.orders.lock().unwrap();
        orders.push(payload.clone());
        if payload.get("replaces").is_some() && matches!(self.replaces, Replaces::AlreadyReplaced) {
            let detail = "the certificate was already replaced";
            let doc = json!({"type": ALREADY_REPLACED, "detail": detail, "status": 409});
            return (409, None, doc);
        }
        let b = &self.base;
        let n = orders.len();
        let expires = (OffsetDateTime::now_utc() + Duration::hours(1))
            .format(&Rfc3339)
            .unwrap();
        let order = json!({
            "status": "pending",
            "expires": expires,
            "identifiers": payload["identifiers"],
            "authorizations": [],
            "finalize": format!("{b}/order/{n}/finalize"),
        });
        (201, Some(format!("{b}/order/{n}")), order)
    }

    fn orders(&self) -> Vec<Value> {
        self.orders.lock().unwrap().clone()
    }
}

/// A leaf whose issuer's key identifier and whose serial are RFC 9773's example.
fn replaced_certificate() -> Vec<u8> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_identifier_method = KeyIdMethod::PreSpecified(RFC_AKI.to_vec());
    let issuer = Issuer::new(ca_params, KeyPair::generate().unwrap());
    let mut params = CertificateParams::new(vec!["example.test".to_owned()]).unwrap();
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(RFC_SERIAL.to_vec().into());
    let der = params
        .signed_by(&KeyPair::generate().unwrap(), &issuer)
        .unwrap()
        .der()
        .to_vec();
    assert_eq!(ari_certificate_id(&der), RFC_CERT_ID);
    der
}

/// RFC 9773 §4.1, read from the certificate with x509-parser.
fn ari_certificate_id(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .expect("an AKI keyIdentifier");
    let serial = cert.tbs_certificate.raw_serial();
    format!("{}.{}", B64.encode(aki.0), B64.encode(serial))
}

async fn session(ca: &FakeCa) -> (Acme, Session) {
    let acme = Acme::connect(&ca.directory_url(), Some(ca.bundle.path()))
        .await
        .unwrap();
    assert!(acme.offers_renewal_info());
    let contacts = ["mailto:ops@example.test".to_owned()];
    let (session, account) = acme.create_account(&contacts, true, None).await.unwrap();
    assert_eq!(account.url, format!("{}/account/1", ca.base));
    (acme, session)
}

fn replacing(der: &[u8]) -> OrderOptions {
    OrderOptions {
        profile: None,
        replaces: Some(der.to_vec()),
    }
}

#[tokio::test]
async fn already_replaced_orders_again_without_replaces() {
    let ca = FakeCa::start(Replaces::AlreadyReplaced).await;
    let (_acme, session) = session(&ca).await;
    let der = replaced_certificate();
    let names = [DomainName::parse("example.test").unwrap()];

    let mut order = session.new_order(&names, &replacing(&der)).await.unwrap();

    assert_eq!(order.url(), format!("{}/order/2", ca.base));
    assert_eq!(order.status(), "pending");
    let identifiers = json!([{"type": "dns", "value": "example.test"}]);
    assert_eq!(
        ca.orders(),
        [
            json!({"identifiers": identifiers, "replaces": RFC_CERT_ID}),
            json!({"identifiers": identifiers}),
        ]
    );
}

#[tokio::test]
async fn replaces_not_echoed_still_gives_an_order() {
    let ca = FakeCa::start(Replaces::NotEchoed).await;
    let (_acme, session) = session(&ca).await;
    let der = replaced_certificate();
    let names = [DomainName::parse("example.test").unwrap()];

    let mut order = session.new_order(&names, &replacing(&der)).await.unwrap();

    // One order with `replaces` (abandoned: not echoed), then one without: the kept one.
    let orders = ca.orders();
    assert_eq!(order.url(), format!("{}/order/2", ca.base));
    assert_eq!(order.status(), "pending");
    let identifiers = json!([{"type": "dns", "value": "example.test"}]);
    assert_eq!(
        orders,
        [
            json!({"identifiers": identifiers, "replaces": RFC_CERT_ID}),
            json!({"identifiers": identifiers}),
        ]
    );
}

#[tokio::test]
async fn renewal_window_carries_the_explanation_url() {
    let ca = FakeCa::start(Replaces::NotEchoed).await;
    let (_acme, session) = session(&ca).await;
    let der = replaced_certificate();

    let window = session.renewal_window(&der).await.unwrap();

    assert_eq!(window.start, datetime!(2030-01-02 03:04:05 UTC));
    assert_eq!(window.end, datetime!(2030-01-04 03:04:05 UTC));
    assert_eq!(
        window.explanation_url.as_deref(),
        Some("https://ca.test/why")
    );
    let retry = window.retry_after.as_secs();
    assert!((21_500..=21_600).contains(&retry), "retry after {retry}s");
    assert_eq!(*ca.renewal_queries.lock().unwrap(), [RFC_CERT_ID]);
}
