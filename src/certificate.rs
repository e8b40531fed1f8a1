//! The issued chain: split into leaf and intermediates, checked against our key,
//! and the facts we report about it.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// An issued certificate chain, checked and split.
#[derive(Debug, Clone)]
pub struct IssuedChain {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The intermediates, PEM, in the CA's order.
    pub chain_pem: String,
    /// Leaf and intermediates, PEM.
    pub fullchain_pem: String,
    /// Facts about the leaf.
    pub info: CertInfo,
}

/// Facts about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lower-case hex without leading zeros.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DNS names in the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// What is wrong with a chain the CA sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No PEM certificate in the body.
    #[error("the CA's answer holds no PEM certificate")]
    Empty,
    /// A block is not a parsable X.509 certificate.
    #[error("the CA sent an unparsable certificate: {0}")]
    Parse(String),
    /// The leaf's public key is not the key we generated.
    #[error("the issued certificate is not for our key")]
    WrongKey,
}

impl IssuedChain {
    /// Splits a PEM chain (leaf first, as RFC 8555 §7.4.2 requires) and checks that
    /// the leaf carries `spki_der`, our public key.
    pub fn parse(pem: &str, spki_der: &[u8]) -> Result<Self, ChainError> {
        let blocks = pem_blocks(pem);
        let (leaf, rest) = blocks.split_first().ok_or(ChainError::Empty)?;
        let info = CertInfo::from_pem(leaf)?;
        for block in rest {
            CertInfo::from_pem(block)?;
        }
        if info.spki_der != spki_der {
            return Err(ChainError::WrongKey);
        }
        Ok(Self {
            cert_pem: leaf.clone(),
            chain_pem: rest.concat(),
            fullchain_pem: blocks.concat(),
            info,
        })
    }
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, ChainError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| ChainError::Parse(e.to_string()))?;
        Self::from_der(&block.contents)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, ChainError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| ChainError::Parse(e.to_string()))?;
        let dns_names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            serial: cert.tbs_certificate.serial.to_str_radix(16),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            dns_names,
            spki_der: cert.public_key().raw.to_vec(),
        })
    }
}

/// Each `CERTIFICATE` block of a PEM text, exactly as the CA wrote it, with a
/// final newline.
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    fn chain() -> (String, rcgen::KeyPair) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["example.com".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (format!("{}\r\n{}", leaf.pem(), ca.pem()), key)
    }

    #[test]
    fn a_chain_splits_into_leaf_and_intermediates() {
        let (pem, key) = chain();
        let issued = IssuedChain::parse(&pem, &key.subject_public_key_info()).unwrap();
        assert_eq!(issued.info.dns_names, ["example.com"]);
        assert_eq!(pem_blocks(&issued.chain_pem).len(), 1);
        assert_eq!(
            issued.fullchain_pem,
            format!("{}{}", issued.cert_pem, issued.chain_pem)
        );
        assert!(issued.info.not_after > issued.info.not_before);
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let (pem, _) = chain();
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(matches!(
            IssuedChain::parse(&pem, &other.subject_public_key_info()),
            Err(ChainError::WrongKey)
        ));
        assert!(matches!(
            IssuedChain::parse("garbage", &other.subject_public_key_info()),
            Err(ChainError::Empty)
        ));
    }
}
