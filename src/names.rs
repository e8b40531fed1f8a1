//! Domain names as the user wrote them, turned into the identifiers an ACME order
//! asks for: internationalised names in their ASCII (A-label) form, lower case,
//! without a trailing dot, duplicates removed, each label checked.
//!
//! Names are validated here, once, before any of them reaches the CA, a hook, a
//! file name or a protocol message.

use std::fmt;

/// A name in an order: `example.com` or `*.example.com`, always ASCII and lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Parses and normalises one name as a user typed it.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let err = |reason: &'static str| NameError {
            name: input.to_owned(),
            reason,
        };
        let trimmed = input.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(err("the name is empty"));
        }
        if trimmed.parse::<std::net::IpAddr>().is_ok() {
            return Err(err(
                "IP address identifiers are not supported; use a DNS name",
            ));
        }
        let (wildcard, base) = match trimmed.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, trimmed),
        };
        if base.contains('*') {
            return Err(err(
                "a wildcard is only allowed as the whole leftmost label, as in *.example.com",
            ));
        }
        let ascii = idna::domain_to_ascii(base)
            .map_err(|_| err("not a valid internationalised domain name"))?;
        check_ldh(&ascii).map_err(err)?;
        Ok(Self(if wildcard {
            format!("*.{ascii}")
        } else {
            ascii
        }))
    }

    /// The name as it appears in the certificate: `*.example.com` or `example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The name without its wildcard label: what the CA validates (`example.com`).
    pub fn base(&self) -> &str {
        self.0.strip_prefix("*.").unwrap_or(&self.0)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses every name, normalises it and removes duplicates, keeping the first
/// occurrence's position (the first name names the certificate).
pub fn parse_all<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<DomainName>, NameError> {
    let mut names: Vec<DomainName> = Vec::with_capacity(inputs.len());
    for input in inputs {
        // Accept comma-separated lists as certbot does (`-d a.com,b.com`).
        for part in input.as_ref().split(',').filter(|p| !p.trim().is_empty()) {
            let name = DomainName::parse(part)?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// A name that cannot be put in an order, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid domain name {name:?}: {reason}")]
pub struct NameError {
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Letters, digits and hyphens; labels of 1–63 octets, not starting or ending with a
/// hyphen; at most 253 octets in all (RFC 1035 §2.3.4, RFC 5891).
fn check_ldh(ascii: &str) -> Result<(), &'static str> {
    if ascii.len() > 253 {
        return Err("the name is longer than 253 characters");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("the name has an empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only letters, digits and hyphens are allowed in a label");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label may not start or end with a hyphen");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_deduplicated() {
        let names = parse_all(&[
            "Example.COM.",
            "www.example.com,example.com",
            "*.Example.com",
        ])
        .unwrap();
        let names: Vec<_> = names.iter().map(DomainName::as_str).collect();
        assert_eq!(names, ["example.com", "www.example.com", "*.example.com"]);
    }

    #[test]
    fn internationalised_names_become_a_labels() {
        let name = DomainName::parse("Bücher.example").unwrap();
        assert_eq!(name.as_str(), "xn--bcher-kva.example");
        let wild = DomainName::parse("*.bücher.example").unwrap();
        assert_eq!(wild.as_str(), "*.xn--bcher-kva.example");
        assert_eq!(wild.base(), "xn--bcher-kva.example");
        assert!(wild.is_wildcard());
    }

    #[test]
    fn hostile_and_malformed_names_are_rejected() {
        for bad in [
            "",
            "a..b",
            "-a.example",
            "a_b.example",
            "../etc/passwd",
            "a b.example",
            "foo.*.example",
            "**.example",
            "127.0.0.1",
            "::1",
            "a;rm -rf.example",
            &format!("{}.example", "a".repeat(64)),
        ] {
            assert!(DomainName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
