//! The two requests instant-acme has no call for, signed here ([RFC 8555 §6.2]):
//! a POST-as-GET of an arbitrary URL (alternate chains) with the account key, and
//! a revocation signed with the certificate's own key ([RFC 8555 §7.6]), which
//! works without (or after the end of) the account that ordered it.
//!
//! [RFC 8555 §6.2]: https://www.rfc-editor.org/rfc/rfc8555#section-6.2
//! [RFC 8555 §7.6]: https://www.rfc-editor.org/rfc/rfc8555#section-7.6

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::prelude::BASE64_URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

use super::{AcmeError, BAD_NONCE_RETRIES, Transport, convert_problem};

/// A private key that signs JWS, and how the header names it.
pub(super) struct Signer {
    key: Key,
    /// `"kid": URL` (an account) or `"jwk": {…}` (a certificate key).
    identity: (&'static str, Value),
}

enum Key {
    Ecdsa(EcdsaKeyPair, &'static str),
    Rsa(RsaKeyPair),
}

impl Signer {
    /// The account key (P-256, PKCS#8), named by the account URL.
    pub(super) fn account(pkcs8: &[u8], kid: &str) -> Result<Self, AcmeError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|_| {
                AcmeError::Transport {
                    context: "signing a request".into(),
                    detail: "the stored account key is not a P-256 key".into(),
                }
            })?;
        Ok(Self {
            key: Key::Ecdsa(key, "ES256"),
            identity: ("kid", json!(kid)),
        })
    }

    /// A certificate's key (PEM: P-256, P-384 or RSA), named by its public JWK.
    pub(super) fn certificate_key(pem: &str) -> Result<Self, AcmeError> {
        let unusable = |detail: String| AcmeError::Transport {
            context: "signing with the certificate's key".into(),
            detail,
        };
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| unusable(e.to_string()))?;
        let pkcs8 = pair.serialize_der();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| unusable(e.to_string()))?;
        let public = info.parsed().map_err(|e| unusable(e.to_string()))?;
        let (key, jwk) = match public {
            x509_parser::public_key::PublicKey::EC(point) => {
                let (algorithm, alg, crv, size) =
                    if pair.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
                        (&ECDSA_P384_SHA384_FIXED_SIGNING, "ES384", "P-384", 48)
                    } else {
                        (&ECDSA_P256_SHA256_FIXED_SIGNING, "ES256", "P-256", 32)
                    };
                // Uncompressed point: 0x04 ‖ X ‖ Y.
                let data = point.data();
                if data.len() != 1 + 2 * size || data[0] != 4 {
                    return Err(unusable("not an uncompressed EC point".into()));
                }
                let key = EcdsaKeyPair::from_pkcs8(algorithm, &pkcs8)
                    .map_err(|e| unusable(e.to_string()))?;
                let jwk = json!({
                    "crv": crv,
                    "kty": "EC",
                    "x": B64.encode(&data[1..=size]),
                    "y": B64.encode(&data[1 + size..]),
                });
                (Key::Ecdsa(key, alg), jwk)
            }
            x509_parser::public_key::PublicKey::RSA(rsa) => {
                let key = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| unusable(e.to_string()))?;
                let trim = |b: &[u8]| {
                    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                    B64.encode(&b[start..])
                };
                let jwk = json!({"e": trim(rsa.exponent), "kty": "RSA", "n": trim(rsa.modulus)});
                (Key::Rsa(key), jwk)
            }
            _ => return Err(unusable("only EC and RSA keys are supported".into())),
        };
        Ok(Self {
            key,
            identity: ("jwk", jwk),
        })
    }

    /// The flattened JWS of `payload` (`None`: empty, a POST-as-GET) for `url`.
    fn jws(&self, payload: Option<&Value>, nonce: &str, url: &str) -> Option<Vec<u8>> {
        let alg = match &self.key {
            Key::Ecdsa(_, alg) => *alg,
            Key::Rsa(_) => "RS256",
        };
        let mut header = json!({"alg": alg, "nonce": nonce, "url": url});
        header[self.identity.0] = self.identity.1.clone();
        let protected = B64.encode(header.to_string());
        let payload = payload.map_or(String::new(), |p| B64.encode(p.to_string()));
        let input = format!("{protected}.{payload}");
        let rng = SystemRandom::new();
        let signature = match &self.key {
            Key::Ecdsa(key, _) => key.sign(&rng, input.as_bytes()).ok()?.as_ref().to_vec(),
            Key::Rsa(key) => {
                let mut out = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut out)
                    .ok()?;
                out
            }
        };
        let jws = json!({
            "protected": protected,
            "payload": payload,
            "signature": B64.encode(signature),
        });
        Some(jws.to_string().into_bytes())
    }
}

/// POSTs `payload` signed by `signer` to `url`, again with a fresh nonce after each
/// `badNonce`; the body of the successful answer, or the CA's problem.
pub(super) async fn post(
    transport: &Transport,
    signer: &Signer,
    url: &str,
    payload: Option<&Value>,
    context: &str,
) -> Result<Bytes, AcmeError> {
    let sign = |nonce: &str| signer.jws(payload, nonce, url);
    for _ in 0..=BAD_NONCE_RETRIES {
        let (status, body) = transport
            .post_jose(url, &sign)
            .await
            .map_err(|e| AcmeError::from_lib(context, e))?;
        if status.is_success() {
            return Ok(body);
        }
        let problem: instant_acme::Problem =
            serde_json::from_slice(&body).map_err(|e| AcmeError::Transport {
                context: context.to_owned(),
                detail: format!("answered {status} without a problem document: {e}"),
            })?;
        if problem.r#type.as_deref() != Some("urn:ietf:params:acme:error:badNonce") {
            return Err(AcmeError::Problem {
                context: context.to_owned(),
                problem: convert_problem(&problem),
            });
        }
    }
    Err(AcmeError::Transport {
        context: context.to_owned(),
        detail: "the CA kept rejecting our nonces".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyType;

    fn header_of(jws: &[u8]) -> Value {
        let jws: Value = serde_json::from_slice(jws).unwrap();
        let protected = B64.decode(jws["protected"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&protected).unwrap()
    }

    #[test]
    fn certificate_keys_sign_with_their_public_jwk() {
        for (kind, alg, kty) in [
            (KeyType::EcP256, "ES256", "EC"),
            (KeyType::EcP384, "ES384", "EC"),
            (KeyType::Rsa2048, "RS256", "RSA"),
        ] {
            let pem = kind.generate().unwrap().serialize_pem();
            let signer = Signer::certificate_key(&pem).unwrap();
            let jws = signer
                .jws(
                    Some(&json!({"certificate": "AA"})),
                    "n1",
                    "https://ca.test/revoke",
                )
                .unwrap();
            let header = header_of(&jws);
            assert_eq!(header["alg"], alg, "{kind}");
            assert_eq!(header["jwk"]["kty"], kty, "{kind}");
            assert_eq!(header["nonce"], "n1");
            assert_eq!(header["url"], "https://ca.test/revoke");
            assert!(header.get("kid").is_none());
            // The signature verifies with the public key the JWK describes.
            let jws: Value = serde_json::from_slice(&jws).unwrap();
            let input = format!(
                "{}.{}",
                jws["protected"].as_str().unwrap(),
                jws["payload"].as_str().unwrap()
            );
            let signature = B64.decode(jws["signature"].as_str().unwrap()).unwrap();
            let field = |name: &str| B64.decode(header["jwk"][name].as_str().unwrap()).unwrap();
            let verified = if kty == "RSA" {
                aws_lc_rs::signature::RsaPublicKeyComponents {
                    n: field("n"),
                    e: field("e"),
                }
                .verify(
                    &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                    input.as_bytes(),
                    &signature,
                )
            } else {
                let point = [vec![4], field("x"), field("y")].concat();
                let algorithm = if alg == "ES256" {
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED
                };
                aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, point)
                    .verify(input.as_bytes(), &signature)
            };
            assert!(verified.is_ok(), "{kind}: the signature does not verify");
        }
    }
}
