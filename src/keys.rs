//! Certificate keys and certificate signing requests ([RFC 2986]), built with rcgen.
//!
//! [RFC 2986]: https://www.rfc-editor.org/rfc/rfc2986

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, RsaKeySize};
use serde::{Deserialize, Serialize};

use crate::names::DomainName;

/// The key algorithm of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: small and fast).
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// RSA, 2048 bits.
    #[serde(rename = "rsa2048")]
    Rsa2048,
    /// RSA, 3072 bits.
    #[serde(rename = "rsa3072")]
    Rsa3072,
    /// RSA, 4096 bits.
    #[serde(rename = "rsa4096")]
    Rsa4096,
}

impl KeyType {
    /// Every key type, for help texts.
    pub const ALL: [KeyType; 5] = [
        Self::EcP256,
        Self::EcP384,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
    ];

    /// The name used on the command line and in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa3072 => "rsa3072",
            Self::Rsa4096 => "rsa4096",
        }
    }

    /// Whether `key` is of this type (RSA sizes are not distinguished by rcgen's
    /// algorithm, so the public key length decides).
    pub fn matches(self, key: &KeyPair) -> bool {
        let alg = key.algorithm();
        match self {
            Self::EcP256 => alg == &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => alg == &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096 => {
                let bits = match self {
                    Self::Rsa2048 => 2048,
                    Self::Rsa3072 => 3072,
                    _ => 4096,
                };
                alg == &rcgen::PKCS_RSA_SHA256
                    && rcgen::PublicKeyData::der_bytes(key).len() > bits / 8
                    && rcgen::PublicKeyData::der_bytes(key).len() < bits / 8 + 32
            }
        }
    }

    /// Generates a fresh key pair of this type.
    pub fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Self::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Self::Rsa2048 => rsa(RsaKeySize::_2048),
            Self::Rsa3072 => rsa(RsaKeySize::_3072),
            Self::Rsa4096 => rsa(RsaKeySize::_4096),
        }
    }
}

fn rsa(size: RsaKeySize) -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown key type {s:?}"))
    }
}

/// A DER CSR for `names`, signed by `key`. The subject's common name is the first
/// name when it fits (64 characters), as certbot does; every name is a SAN.
pub fn csr_der(key: &KeyPair, names: &[DomainName]) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = CertificateParams::new(
        names
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect::<Vec<_>>(),
    )?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = names.first().filter(|n| n.as_str().len() <= 64) {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    Ok(params.serialize_request(key)?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use x509_parser::prelude::FromDer;

    #[test]
    fn a_csr_names_every_domain_and_is_signed_by_the_key() {
        let names = crate::names::parse_all(&["example.com", "*.example.com"]).unwrap();
        for kind in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let key = kind.generate().unwrap();
            let der = csr_der(&key, &names).unwrap();
            let (_, csr) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                    .unwrap();
            csr.verify_signature().unwrap();
            assert_eq!(
                csr.certification_request_info.subject_pki.raw,
                key.subject_public_key_info().as_slice()
            );
            let sans: Vec<String> = csr
                .requested_extensions()
                .into_iter()
                .flatten()
                .filter_map(|e| match e {
                    x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(
                        san.general_names
                            .iter()
                            .map(|g| g.to_string())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(sans, ["DNSName(example.com)", "DNSName(*.example.com)"]);
        }
    }
}
