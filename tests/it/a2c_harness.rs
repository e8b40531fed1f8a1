//! A second, independent ACME server for the tests: acme2certifier 0.46.3 (PyPI), which
//! has ARI (`renewalInfo`) and certificate profiles, both missing from Pebble.
//!
//! acme2certifier lives in a Python virtual environment that `bash tests/all.sh
//! prerequisites` creates at `target/a2c-venv` (or the Python named by
//! `ACME_BRIDGE_A2C_PYTHON`). `tests/a2c_server.py` serves its WSGI application over
//! HTTPS on a free loopback port.
//!
//! Each [`Acme2Certifier`] owns a temporary directory with:
//! - a TLS CA and a server certificate for `127.0.0.1`/`localhost`, generated in code
//!   ([`Acme2Certifier::ca_bundle_path`] is what acme-bridge gets as `--ca-bundle`);
//! - a local issuing CA, generated in code, whose subjectKeyIdentifier is the SHA-1 of
//!   its public key (RFC 5280 §4.2.1.2 method 1) — exactly the keyIdentifier
//!   acme2certifier's `openssl_ca_handler` writes into the authorityKeyIdentifier of
//!   every certificate it issues, which is what ARI identifies certificates by;
//! - `acme_srv.cfg`, the SQLite database, issued certificates and the server's log.
//!
//! Challenge validation is disabled (`challenge_validation_disable` with
//! `ACME2CERTIFIER_I_KNOW_THE_RISK=1`): every challenge a client answers becomes valid,
//! so no privileged port and no DNS server are needed. Accounts need no contact.
//! The server process is killed (by PID) when the value is dropped; the launcher also
//! exits by itself when the test process dies.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use hyper::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::harness::HttpClient;

/// The acme2certifier release the harness is written against (and `tests/lib.sh` installs).
pub(crate) const A2C_VERSION: &str = "0.46.3";

/// Environment variable naming the Python interpreter that has acme2certifier installed.
pub(crate) const PYTHON_ENV: &str = "ACME_BRIDGE_A2C_PYTHON";

/// Where `bash tests/all.sh prerequisites` puts the virtual environment's Python.
const DEFAULT_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/a2c-venv/bin/python3");

/// The launcher that serves acme2certifier's WSGI application over HTTPS.
const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/a2c_server.py");

/// How long the harness waits for the server to come up. A guard against hangs, not an
/// assertion about speed.
const STARTUP_GUARD: Duration = Duration::from_secs(60);

/// The profile names offered when profiles are on.
pub(crate) const PROFILE_CLASSIC: &str = "classic";
/// The short-lived profile: certificates valid for [`SHORTLIVED_VALIDITY_DAYS`].
pub(crate) const PROFILE_SHORTLIVED: &str = "shortlived";
/// Validity of certificates issued under the `shortlived` profile.
pub(crate) const SHORTLIVED_VALIDITY_DAYS: u32 = 1;
/// Default validity of every other certificate (`cert_validity_days`).
pub(crate) const DEFAULT_VALIDITY_DAYS: u32 = 30;

/// The Python interpreter with acme2certifier [`A2C_VERSION`], checked once per test
/// binary. Panics — the test fails, it is not skipped — with instructions when missing.
pub(crate) fn python() -> &'static Path {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let python = std::env::var_os(PYTHON_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
        let output = Command::new(&python)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('acme2certifier'))",
            ])
            .stdin(Stdio::null())
            .output();
        let problem = match output {
            Err(e) => format!("cannot run {}: {e}", python.display()),
            Ok(out) if !out.status.success() => format!(
                "{} has no acme2certifier ({})",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .find(|line| !line.trim().is_empty())
                    .unwrap_or("no error message")
                    .trim()
            ),
            Ok(out) => {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if version == A2C_VERSION {
                    return Ok(python);
                }
                format!(
                    "{} has acme2certifier {version}, the tests need {A2C_VERSION}",
                    python.display()
                )
            }
        };
        Err(format!(
            "acme2certifier {A2C_VERSION} is not installed: {problem}.\n\
             Run `bash tests/all.sh prerequisites` (it installs acme2certifier into \
             target/a2c-venv), or set {PYTHON_ENV} to a Python that has it."
        ))
    });
    match checked {
        Ok(python) => python,
        Err(why) => panic!("{why}"),
    }
}

/// Options for an acme2certifier instance.
#[derive(Debug, Clone)]
pub(crate) struct Acme2CertifierBuilder {
    profiles: bool,
    renewal_force: bool,
    renewal_threshold_pctg: Option<f64>,
    cert_validity_days: u32,
    debug: bool,
    settings: Vec<(String, String, String)>,
}

impl Default for Acme2CertifierBuilder {
    fn default() -> Self {
        Self {
            profiles: false,
            renewal_force: false,
            renewal_threshold_pctg: None,
            cert_validity_days: DEFAULT_VALIDITY_DAYS,
            debug: false,
            settings: Vec::new(),
        }
    }
}

impl Acme2CertifierBuilder {
    /// Offer two profiles, `classic` ([`Self::cert_validity_days`]) and `shortlived`
    /// ([`SHORTLIVED_VALIDITY_DAYS`]), each routed to its own `[CAhandler:<name>]`
    /// section; orders without a profile go to `classic`, an unknown profile is refused
    /// with `invalidProfile`.
    pub(crate) fn profiles(mut self, on: bool) -> Self {
        self.profiles = on;
        self
    }

    /// `[Renewalinfo] renewal_force`: ARI says every certificate is due for renewal now.
    pub(crate) fn renewal_force(mut self, on: bool) -> Self {
        self.renewal_force = on;
        self
    }

    /// `[Renewalinfo] renewalthreshold_pctg`: where the ARI window starts, in percent of
    /// the certificate's lifetime (acme2certifier's default is 85).
    pub(crate) fn renewal_threshold_pctg(mut self, percent: f64) -> Self {
        self.renewal_threshold_pctg = Some(percent);
        self
    }

    /// `cert_validity_days` of the default (`classic`) CA handler; default 30.
    pub(crate) fn cert_validity_days(mut self, days: u32) -> Self {
        self.cert_validity_days = days;
        self
    }

    /// `[DEFAULT] debug`: acme2certifier logs every function call (large logs).
    #[allow(dead_code)]
    pub(crate) fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// Any other `key: value` in `[section]` of `acme_srv.cfg` (appended after the
    /// harness's own settings, so a later one wins).
    #[allow(dead_code)]
    pub(crate) fn setting(mut self, section: &str, key: &str, value: &str) -> Self {
        self.settings
            .push((section.to_owned(), key.to_owned(), value.to_owned()));
        self
    }

    /// Generates the PKI and configuration, starts the server and waits until
    /// `/directory` answers.
    pub(crate) async fn start(self) -> Acme2Certifier {
        let python = python();
        let dir = tempfile::Builder::new()
            .prefix("acme-bridge-a2c-")
            .tempdir()
            .expect("temporary directory for acme2certifier");
        let path = |name: &str| dir.path().join(name);

        let tls = TlsPki::generate();
        let issuing = IssuingCa::generate();
        let ca_bundle = path("tls-ca.pem");
        std::fs::write(&ca_bundle, &tls.ca_pem).expect("write TLS CA bundle");
        std::fs::write(path("server.pem"), &tls.server_cert_pem).expect("write server cert");
        std::fs::write(path("server.key"), &tls.server_key_pem).expect("write server key");
        std::fs::write(path("issuing-ca.pem"), &issuing.cert_pem).expect("write issuing CA");
        std::fs::write(path("issuing-ca.key"), &issuing.key_pem).expect("write issuing key");
        std::fs::create_dir(path("certs")).expect("create cert_save_path");
        let config = path("acme_srv.cfg");
        std::fs::write(&config, self.config_text(dir.path())).expect("write acme_srv.cfg");

        let log = path("a2c.log");
        let port_file = path("port");
        let out = File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let child = Command::new(python)
            .arg(LAUNCHER)
            .arg("--config")
            .arg(&config)
            .arg("--cert")
            .arg(path("server.pem"))
            .arg("--key")
            .arg(path("server.key"))
            .arg("--port-file")
            .arg(&port_file)
            .current_dir(dir.path())
            .env("ACME2CERTIFIER_I_KNOW_THE_RISK", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {LAUNCHER}: {e}", python.display()));

        let mut server = Acme2Certifier {
            http: HttpClient::trusting(&tls.ca_pem),
            directory_url: String::new(),
            ca_bundle,
            issuing_ca_pem: issuing.cert_pem,
            log,
            child: Some(child),
            dir,
        };
        if let Err(why) = server.wait_until_ready(&port_file).await {
            panic!(
                "acme2certifier did not start: {why}\n--- acme2certifier log ---\n{}",
                server.log()
            );
        }
        server
    }

    /// `acme_srv.cfg` for a server working in `dir`.
    fn config_text(&self, dir: &Path) -> String {
        let d = dir.display();
        let mut cfg = Ini::default();
        cfg.set(
            "DEFAULT",
            "debug",
            if self.debug { "True" } else { "False" },
        );
        cfg.set("Nonce", "nonce_check_disable", "False");
        cfg.set("DBhandler", "handler", "wsgi");
        cfg.set("DBhandler", "dbfile", &format!("{d}/acme_srv.db"));
        cfg.set("Account", "contact_check_disable", "True");
        cfg.set("Challenge", "challenge_validation_disable", "True");
        if self.renewal_force {
            cfg.set("Renewalinfo", "renewal_force", "True");
        }
        if let Some(percent) = self.renewal_threshold_pctg {
            cfg.set("Renewalinfo", "renewalthreshold_pctg", &percent.to_string());
        }

        let ca_handler = |cfg: &mut Ini, section: &str, name: &str, days: u32| {
            for (key, value) in [
                (
                    "handler_module",
                    "acme2certifier.cahandlers.openssl_ca_handler".to_owned(),
                ),
                ("issuing_ca_key", format!("{d}/issuing-ca.key")),
                ("issuing_ca_cert", format!("{d}/issuing-ca.pem")),
                // Required by the handler; only read on revocation.
                ("issuing_ca_crl", format!("{d}/issuing-ca-{name}.crl")),
                ("cert_save_path", format!("{d}/certs")),
                ("ca_cert_chain_list", "[]".to_owned()),
                ("cert_validity_days", days.to_string()),
            ] {
                cfg.set(section, key, &value);
            }
        };
        if self.profiles {
            let descriptions = serde_json::json!({
                PROFILE_CLASSIC: format!("{} days", self.cert_validity_days),
                PROFILE_SHORTLIVED: format!("{SHORTLIVED_VALIDITY_DAYS} day"),
            });
            let routes = serde_json::json!({
                PROFILE_CLASSIC: PROFILE_CLASSIC,
                PROFILE_SHORTLIVED: PROFILE_SHORTLIVED,
            });
            cfg.set("Order", "profiles", &descriptions.to_string());
            cfg.set("Order", "profile_cahandler", &routes.to_string());
            cfg.set("CAhandler", "multi_handler", "True");
            cfg.set("CAhandler", "default_handler", PROFILE_CLASSIC);
            ca_handler(
                &mut cfg,
                &format!("CAhandler:{PROFILE_CLASSIC}"),
                PROFILE_CLASSIC,
                self.cert_validity_days,
            );
            ca_handler(
                &mut cfg,
                &format!("CAhandler:{PROFILE_SHORTLIVED}"),
                PROFILE_SHORTLIVED,
                SHORTLIVED_VALIDITY_DAYS,
            );
        } else {
            ca_handler(&mut cfg, "CAhandler", "default", self.cert_validity_days);
        }

        for (section, key, value) in &self.settings {
            cfg.set(section, key, value);
        }
        cfg.render()
    }
}

/// An INI file as Python's `configparser` reads it: each section once (it refuses
/// duplicates), `key: value` lines, sections and keys in the order first set.
#[derive(Default)]
struct Ini {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Ini {
    /// Sets `key` in `section`, replacing an earlier value.
    fn set(&mut self, section: &str, key: &str, value: &str) {
        assert!(
            !value.contains('\n'),
            "acme_srv.cfg values are single lines: [{section}] {key}: {value:?}"
        );
        let entries = match self.sections.iter().position(|(name, _)| name == section) {
            Some(at) => &mut self.sections[at].1,
            None => {
                self.sections.push((section.to_owned(), Vec::new()));
                &mut self.sections.last_mut().expect("just pushed").1
            }
        };
        match entries.iter_mut().find(|(name, _)| name == key) {
            Some(entry) => entry.1 = value.to_owned(),
            None => entries.push((key.to_owned(), value.to_owned())),
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for (section, entries) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in entries {
                text.push_str(&format!("{key}: {value}\n"));
            }
            text.push('\n');
        }
        text
    }
}

/// A running acme2certifier, killed on drop.
pub(crate) struct Acme2Certifier {
    http: HttpClient,
    directory_url: String,
    ca_bundle: PathBuf,
    issuing_ca_pem: String,
    log: PathBuf,
    child: Option<Child>,
    // Last: removed after the child is gone.
    dir: TempDir,
}

impl Acme2Certifier {
    /// A builder for non-default options.
    pub(crate) fn builder() -> Acme2CertifierBuilder {
        Acme2CertifierBuilder::default()
    }

    /// Starts an instance with the defaults (no profiles, 30-day certificates).
    pub(crate) async fn start() -> Self {
        Acme2CertifierBuilder::default().start().await
    }

    /// The ACME directory URL (`https://127.0.0.1:PORT/directory`).
    pub(crate) fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// The generated CA (PEM) that signed the server's HTTPS certificate: pass as
    /// `--ca-bundle`.
    pub(crate) fn ca_bundle_path(&self) -> &Path {
        &self.ca_bundle
    }

    /// The local issuing CA (PEM, self-signed) that signs every certificate issued:
    /// the trust anchor for verifying an issued chain.
    pub(crate) fn issuing_ca_pem(&self) -> &str {
        &self.issuing_ca_pem
    }

    /// The harness's temporary directory (configuration, PKI, database, log).
    #[allow(dead_code)]
    pub(crate) fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The harness's HTTP client (trusts the generated TLS CA).
    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The directory object.
    pub(crate) async fn directory(&self) -> Value {
        let (status, body) = self.http.get(&self.directory_url).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "GET {}\n{}",
            self.directory_url,
            self.log()
        );
        serde_json::from_slice(&body).expect("directory is JSON")
    }

    /// Everything the server wrote so far (acme2certifier's log and one line per
    /// request from the launcher).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `max_lines` lines of [`Self::log`], for assertion messages.
    pub(crate) fn log_tail(&self, max_lines: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(max_lines);
        let mut tail = lines[start..].join("\n");
        if start > 0 {
            tail.insert_str(0, &format!("[... {start} earlier lines ...]\n"));
        }
        tail
    }

    async fn wait_until_ready(&mut self, port_file: &Path) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + STARTUP_GUARD;
        // The launcher writes the port file once its socket is listening.
        let port: u16 = loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("the server exited early with {status}"));
            }
            if let Ok(text) = std::fs::read_to_string(port_file)
                && let Ok(port) = text.trim().parse()
            {
                break port;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no port file after {STARTUP_GUARD:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.directory_url = format!("https://127.0.0.1:{port}/directory");
        // A panic inside the task (a transport error) becomes an Err with the log.
        let http = self.http.clone();
        let url = self.directory_url.clone();
        match tokio::spawn(async move { http.get(&url).await }).await {
            Ok((StatusCode::OK, _)) => Ok(()),
            Ok((status, body)) => Err(format!(
                "GET {} answered {status}: {}",
                self.directory_url,
                String::from_utf8_lossy(&body)
            )),
            Err(e) => Err(format!("GET {} failed: {e}", self.directory_url)),
        }
    }
}

impl Drop for Acme2Certifier {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL to exactly this PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The TLS side: a CA and a certificate for `127.0.0.1` and `localhost`.
struct TlsPki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TlsPki {
    fn generate() -> Self {
        let ca_key = KeyPair::generate().expect("TLS CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name = common_name("acme-bridge a2c harness TLS CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed TLS CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params.distinguished_name = common_name("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }
}

/// The issuing CA for acme2certifier's `openssl_ca_handler`.
struct IssuingCa {
    cert_pem: String,
    key_pem: String,
}

impl IssuingCa {
    fn generate() -> Self {
        let key = KeyPair::generate().expect("issuing CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = common_name("acme-bridge a2c harness issuing CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // The subjectKeyIdentifier as acme2certifier (Python `cryptography`'s
        // AuthorityKeyIdentifier.from_issuer_public_key) computes the issued
        // certificates' authorityKeyIdentifier: SHA-1 of the subjectPublicKey bits.
        let ski = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            key.public_key_raw(),
        );
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski.as_ref().to_vec());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key).expect("self-signed issuing CA");
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
