//! Looking at what acme-bridge wrote: PEM files, X.509 contents, key/certificate pairs and
//! path verification against Pebble's root.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The certificates in a PEM file, in order.
pub(crate) fn pem_certificates_in(path: &Path) -> Vec<CertificateDer<'static>> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    pem_certificates(&bytes)
}

/// The certificates in PEM text, in order.
pub(crate) fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("invalid PEM certificate(s): {e:?}"))
}

/// Parses one DER certificate.
pub(crate) fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) =
        X509Certificate::from_der(der).unwrap_or_else(|e| panic!("invalid X.509: {e}"));
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    cert
}

/// The dNSName SANs of a certificate, sorted.
pub(crate) fn dns_names(der: &[u8]) -> Vec<String> {
    let cert = parse(der);
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .expect("well-formed SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The serial number as lowercase hex without leading zeros.
pub(crate) fn serial_hex(der: &[u8]) -> String {
    let cert = parse(der);
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    normalize_hex(&hex)
}

/// Lowercase, no `:` separators, no leading zeros.
pub(crate) fn normalize_hex(hex: &str) -> String {
    let hex: String = hex
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `(not_before, not_after)` as Unix timestamps.
pub(crate) fn validity(der: &[u8]) -> (i64, i64) {
    let cert = parse(der);
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

/// The kind of public key in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// RSA with this modulus size in bits.
    Rsa(usize),
    /// EC on the named curve with this OID (e.g. `1.2.840.10045.3.1.7` = P-256).
    Ec(String),
    /// Anything else.
    Other(String),
}

/// P-256's OID (RFC 5480).
pub(crate) const P256: &str = "1.2.840.10045.3.1.7";
/// P-384's OID (RFC 5480).
pub(crate) const P384: &str = "1.3.132.0.34";

/// The key kind of a certificate's subject public key.
pub(crate) fn key_kind(der: &[u8]) -> KeyKind {
    let cert = parse(der);
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => KeyKind::Rsa(rsa.key_size()),
        Ok(PublicKey::EC(_)) => KeyKind::Ec(
            spki.algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default(),
        ),
        _ => KeyKind::Other(spki.algorithm.algorithm.to_id_string()),
    }
}

/// True when the PEM private key (PKCS#8, SEC1 or PKCS#1) belongs to the certificate.
pub(crate) fn key_matches_certificate(key_pem: &[u8], cert_der: &[u8]) -> bool {
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .unwrap_or_else(|e| panic!("the private key is not PEM: {e:?}"));
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .unwrap_or_else(|e| panic!("unsupported private key: {e}"));
    let spki_der = signing_key
        .public_key()
        .expect("the signing key exposes its public key");
    let (_, from_key) =
        SubjectPublicKeyInfo::from_der(spki_der.as_ref()).expect("SPKI of the private key");
    let cert = parse(cert_der);
    let from_cert = cert.public_key();
    from_key.algorithm.algorithm == from_cert.algorithm.algorithm
        && from_key.subject_public_key.data == from_cert.subject_public_key.data
}

/// Real path verification (rustls' webpki verifier) of `leaf` + `intermediates` for
/// `server_name`, trusting only `roots_pem`.
pub(crate) fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots_pem: &[u8],
    server_name: &str,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    for root in pem_certificates(roots_pem) {
        roots.add(root).expect("root certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("webpki verifier");
    let name = ServerName::try_from(server_name.to_owned()).expect("valid server name");
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(|_| ())
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
