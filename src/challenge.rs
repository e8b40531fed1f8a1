//! Challenge data, computed once per challenge and rendered by every mode.
//!
//! From the CA's token and the account key's thumbprint this module derives the key
//! authorization ([RFC 8555 §8.1]) and, per challenge type, the ready-to-use form a
//! consumer needs: the TXT record for `dns-01` ([§8.4]), the file for `http-01`
//! ([§8.3]) and the certificate for `tls-alpn-01` ([RFC 8737]).
//!
//! [RFC 8555 §8.1]: https://www.rfc-editor.org/rfc/rfc8555#section-8.1
//! [§8.3]: https://www.rfc-editor.org/rfc/rfc8555#section-8.3
//! [§8.4]: https://www.rfc-editor.org/rfc/rfc8555#section-8.4
//! [RFC 8737]: https://www.rfc-editor.org/rfc/rfc8737

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The three domain-validation challenge types acme-bridge can hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ChallengeType {
    /// A TXT record at `_acme-challenge.<name>` ([RFC 8555 §8.4]).
    ///
    /// [RFC 8555 §8.4]: https://www.rfc-editor.org/rfc/rfc8555#section-8.4
    #[serde(rename = "dns-01")]
    Dns01,
    /// A file under `/.well-known/acme-challenge/` on port 80 ([RFC 8555 §8.3]).
    ///
    /// [RFC 8555 §8.3]: https://www.rfc-editor.org/rfc/rfc8555#section-8.3
    #[serde(rename = "http-01")]
    Http01,
    /// A self-signed certificate served on port 443 with ALPN `acme-tls/1` ([RFC 8737]).
    ///
    /// [RFC 8737]: https://www.rfc-editor.org/rfc/rfc8737
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeType {
    /// The name RFC 8555 and the CA use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns01 => "dns-01",
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl fmt::Display for ChallengeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChallengeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dns-01" => Ok(Self::Dns01),
            "http-01" => Ok(Self::Http01),
            "tls-alpn-01" => Ok(Self::TlsAlpn01),
            _ => Err(format!(
                "unknown challenge type {s:?} (expected dns-01, http-01 or tls-alpn-01)"
            )),
        }
    }
}

/// One challenge, with everything a consumer needs to satisfy it.
///
/// This is the payload of the protocol's `challenge` and `cleanup` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Challenge {
    /// Identifies this challenge within the run; replies echo it.
    pub id: String,
    /// The name as it appears in the certificate, e.g. `*.example.com`.
    pub domain: String,
    /// The name the CA validates (a wildcard's base), e.g. `example.com`.
    pub identifier: String,
    /// Whether `domain` is a wildcard. A wildcard and its apex share one DNS name.
    pub wildcard: bool,
    /// The CA's token for this challenge (base64url).
    pub token: String,
    /// `token.thumbprint`: the key authorization ([RFC 8555 §8.1]).
    ///
    /// [RFC 8555 §8.1]: https://www.rfc-editor.org/rfc/rfc8555#section-8.1
    pub key_authorization: String,
    /// What to publish, by challenge type.
    #[serde(flatten)]
    pub kind: ChallengeKind,
}

/// The ready-to-use form of a challenge, tagged by `challenge_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "challenge_type")]
pub enum ChallengeKind {
    /// Publish a TXT record.
    #[serde(rename = "dns-01")]
    Dns01 {
        /// The record to publish.
        dns: DnsRecord,
    },
    /// Serve a file over plain HTTP on port 80.
    #[serde(rename = "http-01")]
    Http01 {
        /// The resource to serve.
        http: HttpResource,
    },
    /// Serve a certificate over TLS on port 443 with ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01 {
        /// The certificate to serve.
        tls_alpn: TlsAlpnCertificate,
    },
}

/// A TXT record for `dns-01`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsRecord {
    /// The record's fully qualified name with a trailing dot:
    /// `_acme-challenge.example.com.`. A wildcard and its apex give two challenges
    /// with the same name: append TXT values, never replace them.
    pub name: String,
    /// The TXT value: base64url(SHA-256(key authorization)).
    pub value: String,
}

/// A file for `http-01`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpResource {
    /// The path the CA requests: `/.well-known/acme-challenge/<token>`.
    pub path: String,
    /// The full URL the CA requests, on port 80.
    pub url: String,
    /// The exact body to serve (the key authorization), as `text/plain` or any type.
    pub body: String,
    /// The file name to create under a web root's `.well-known/acme-challenge/`.
    pub file_name: String,
}

/// A ready certificate for `tls-alpn-01`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TlsAlpnCertificate {
    /// The TLS server name the CA sends (SNI).
    pub sni: String,
    /// The ALPN protocol to accept: `acme-tls/1`.
    pub alpn: String,
    /// Hex SHA-256 of the key authorization: the acmeIdentifier extension's value.
    pub digest: String,
    /// A self-signed certificate for `sni` carrying the critical acmeIdentifier
    /// extension, ready to serve.
    pub certificate_pem: String,
    /// Its private key (PKCS#8 PEM). Throwaway: valid for this challenge only.
    pub private_key_pem: String,
}

/// What the CA hands out for one challenge, before the data is derived.
#[derive(Debug, Clone)]
pub struct ChallengeSource<'a> {
    /// Our id for the challenge.
    pub id: String,
    /// The requested name (`*.example.com` or `example.com`).
    pub domain: &'a str,
    /// The validated identifier (`example.com`).
    pub identifier: &'a str,
    /// Whether the authorization is for a wildcard.
    pub wildcard: bool,
    /// The CA's token.
    pub token: &'a str,
    /// The challenge type.
    pub challenge_type: ChallengeType,
}

/// Why challenge data could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// The CA sent a token with characters outside base64url.
    #[error("the CA sent a malformed challenge token {0:?}")]
    BadToken(String),
    /// The tls-alpn-01 certificate could not be built.
    #[error("could not build the tls-alpn-01 certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

impl Challenge {
    /// Derives everything for one challenge from the CA's token and the account
    /// key's JWK thumbprint.
    pub fn compute(source: ChallengeSource<'_>, thumbprint: &str) -> Result<Self, ChallengeError> {
        let token = source.token;
        // Tokens go into paths and hook arguments: they must be plain base64url.
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ChallengeError::BadToken(token.to_owned()));
        }
        let key_authorization = format!("{token}.{thumbprint}");
        let hash = digest(&SHA256, key_authorization.as_bytes());
        let identifier = source.identifier;
        let kind = match source.challenge_type {
            ChallengeType::Dns01 => ChallengeKind::Dns01 {
                dns: DnsRecord {
                    name: format!("_acme-challenge.{identifier}."),
                    value: BASE64_URL_SAFE_NO_PAD.encode(hash.as_ref()),
                },
            },
            ChallengeType::Http01 => {
                let path = format!("/.well-known/acme-challenge/{token}");
                ChallengeKind::Http01 {
                    http: HttpResource {
                        url: format!("http://{identifier}{path}"),
                        path,
                        body: key_authorization.clone(),
                        file_name: token.to_owned(),
                    },
                }
            }
            ChallengeType::TlsAlpn01 => {
                let (certificate_pem, private_key_pem) =
                    tls_alpn_certificate(identifier, hash.as_ref())?;
                ChallengeKind::TlsAlpn01 {
                    tls_alpn: TlsAlpnCertificate {
                        sni: identifier.to_owned(),
                        alpn: "acme-tls/1".to_owned(),
                        digest: hex(hash.as_ref()),
                        certificate_pem,
                        private_key_pem,
                    },
                }
            }
        };
        Ok(Self {
            id: source.id,
            domain: source.domain.to_owned(),
            identifier: identifier.to_owned(),
            wildcard: source.wildcard,
            token: token.to_owned(),
            key_authorization,
            kind,
        })
    }

    /// The challenge type.
    pub fn challenge_type(&self) -> ChallengeType {
        match self.kind {
            ChallengeKind::Dns01 { .. } => ChallengeType::Dns01,
            ChallengeKind::Http01 { .. } => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 { .. } => ChallengeType::TlsAlpn01,
        }
    }
}

/// A self-signed certificate for `name` with the critical acmeIdentifier extension
/// holding `digest` (RFC 8737 §3), and its key, both PEM.
fn tls_alpn_certificate(name: &str, digest: &[u8]) -> Result<(String, String), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(challenge_type: ChallengeType) -> ChallengeSource<'static> {
        ChallengeSource {
            id: "c1".into(),
            domain: "*.example.com",
            identifier: "example.com",
            wildcard: true,
            token: "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
            challenge_type,
        }
    }

    // The JWK thumbprint of the example key in RFC 7638 §3.1.
    const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    #[test]
    fn dns01_value_is_base64url_sha256_of_key_authorization() {
        let c = Challenge::compute(source(ChallengeType::Dns01), THUMB).unwrap();
        assert_eq!(
            c.key_authorization,
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let ChallengeKind::Dns01 { dns } = &c.kind else {
            panic!("not dns-01")
        };
        assert_eq!(dns.name, "_acme-challenge.example.com.");
        let expected = digest(&SHA256, c.key_authorization.as_bytes());
        assert_eq!(
            BASE64_URL_SAFE_NO_PAD.decode(&dns.value).unwrap(),
            expected.as_ref()
        );
        assert_eq!(dns.value.len(), 43);
    }

    #[test]
    fn http01_serves_the_key_authorization_under_well_known() {
        let c = Challenge::compute(source(ChallengeType::Http01), THUMB).unwrap();
        let ChallengeKind::Http01 { http } = &c.kind else {
            panic!("not http-01")
        };
        assert_eq!(http.url, format!("http://example.com{}", http.path));
        assert_eq!(
            http.path,
            format!("/.well-known/acme-challenge/{}", c.token)
        );
        assert_eq!(http.body, c.key_authorization);
    }

    #[test]
    fn tls_alpn01_certificate_carries_a_critical_acme_identifier() {
        let c = Challenge::compute(source(ChallengeType::TlsAlpn01), THUMB).unwrap();
        let ChallengeKind::TlsAlpn01 { tls_alpn } = &c.kind else {
            panic!("not tls-alpn-01")
        };
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(tls_alpn.certificate_pem.as_bytes()).expect("PEM");
        let cert = pem.parse_x509().expect("certificate");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING of 32 bytes: 04 20 || digest.
        assert_eq!(&ext.value[..2], &[0x04, 0x20]);
        assert_eq!(hex(&ext.value[2..]), tls_alpn.digest);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
    }

    #[test]
    fn tokens_that_could_escape_a_path_are_refused() {
        let mut s = source(ChallengeType::Http01);
        s.token = "../../etc/passwd";
        assert!(matches!(
            Challenge::compute(s, THUMB),
            Err(ChallengeError::BadToken(_))
        ));
    }
}
