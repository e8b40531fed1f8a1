//! A real ACME server for every test: Debian's `pebble` and `pebble-challtestsrv`.
//!
//! Each [`Pebble`] owns a temporary directory, a throwaway CA generated in code, a server
//! certificate for Pebble's HTTPS listeners, free loopback ports and the two child
//! processes. Both children are killed (by PID) when the value is dropped.

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long the harness waits for the servers to come up before giving up.
/// This is a guard against hangs, not an assertion about speed.
const STARTUP_GUARD: Duration = Duration::from_secs(60);

/// Options for a Pebble instance. Defaults make runs deterministic: no nonce rejection,
/// no authorization reuse, no validation sleep.
#[derive(Debug, Clone)]
pub(crate) struct PebbleBuilder {
    nonce_reject_percent: u8,
    authz_reuse_percent: u8,
    certificate_validity_period: Option<u64>,
    env: Vec<(String, String)>,
    config: serde_json::Map<String, Value>,
    responder_ports: Option<(u16, u16)>,
}

impl Default for PebbleBuilder {
    fn default() -> Self {
        Self {
            nonce_reject_percent: 0,
            authz_reuse_percent: 0,
            certificate_validity_period: None,
            env: Vec::new(),
            config: serde_json::Map::new(),
            responder_ports: None,
        }
    }
}

impl PebbleBuilder {
    /// `PEBBLE_WFE_NONCEREJECT`: the percentage of nonces Pebble rejects as `badNonce`.
    pub(crate) fn nonce_reject_percent(mut self, percent: u8) -> Self {
        self.nonce_reject_percent = percent;
        self
    }

    /// `PEBBLE_AUTHZREUSE`: the percentage chance a valid authorization is reused.
    pub(crate) fn authz_reuse_percent(mut self, percent: u8) -> Self {
        self.authz_reuse_percent = percent;
        self
    }

    /// `certificateValidityPeriod` in seconds (small values exercise renewal).
    pub(crate) fn certificate_validity_period(mut self, seconds: u64) -> Self {
        self.certificate_validity_period = Some(seconds);
        self
    }

    /// An extra environment variable for the `pebble` process (overrides the defaults).
    #[allow(dead_code)]
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Pebble validates against the test's own responders: http-01 on
    /// `127.0.0.1:http_port`, tls-alpn-01 on `127.0.0.1:tls_port` (challtestsrv's DNS
    /// answers 127.0.0.1 for every name), and challtestsrv's http-01 and tls-alpn-01
    /// listeners are off. Pick the ports with [`free_tcp_port`].
    #[allow(dead_code)]
    pub(crate) fn own_responders(mut self, http_port: u16, tls_port: u16) -> Self {
        self.responder_ports = Some((http_port, tls_port));
        self
    }

    /// An extra key in Pebble's `{"pebble": {...}}` configuration object.
    pub(crate) fn config(mut self, key: &str, value: Value) -> Self {
        self.config.insert(key.to_owned(), value);
        self
    }

    /// Starts challtestsrv and Pebble and waits until the ACME directory answers.
    ///
    /// Ports are picked by binding `127.0.0.1:0`; another process could grab one between
    /// picking and use, so a start whose children die early is retried with new ports.
    pub(crate) async fn start(self) -> Pebble {
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            match self.try_start().await {
                Ok(pebble) => return pebble,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("Pebble did not start:\n{last_failure}");
    }

    async fn try_start(&self) -> Result<Pebble, String> {
        let dir = tempfile::Builder::new()
            .prefix("acme-bridge-pebble-")
            .tempdir()
            .expect("temporary directory for Pebble");
        let pki = TestPki::generate();
        let ca_bundle = dir.path().join("test-ca.pem");
        let cert_file = dir.path().join("pebble-server.pem");
        let key_file = dir.path().join("pebble-server.key");
        std::fs::write(&ca_bundle, &pki.ca_pem).expect("write CA bundle");
        std::fs::write(&cert_file, &pki.server_cert_pem).expect("write server certificate");
        std::fs::write(&key_file, &pki.server_key_pem).expect("write server key");

        let ports = free_ports(6);
        let ports = Ports {
            acme: ports[0],
            management: ports[1],
            challtestsrv: ports[2],
            dns: ports[3],
            http01: ports[4],
            tlsalpn01: ports[5],
        };

        let mut config = serde_json::Map::new();
        config.insert(
            "listenAddress".into(),
            json!(format!("127.0.0.1:{}", ports.acme)),
        );
        config.insert(
            "managementListenAddress".into(),
            json!(format!("127.0.0.1:{}", ports.management)),
        );
        config.insert("certificate".into(), json!(cert_file));
        config.insert("privateKey".into(), json!(key_file));
        let (http_port, tls_port) = self
            .responder_ports
            .unwrap_or((ports.http01, ports.tlsalpn01));
        config.insert("httpPort".into(), json!(http_port));
        config.insert("tlsPort".into(), json!(tls_port));
        // With the test's own responders, challtestsrv serves neither challenge.
        let challtestsrv_listener = |port: u16| match self.responder_ports {
            Some(_) => String::new(),
            None => format!("127.0.0.1:{port}"),
        };
        config.insert("ocspResponderURL".into(), json!(""));
        config.insert("externalAccountBindingRequired".into(), json!(false));
        if let Some(seconds) = self.certificate_validity_period {
            config.insert("certificateValidityPeriod".into(), json!(seconds));
        }
        for (key, value) in &self.config {
            config.insert(key.clone(), value.clone());
        }
        let config_file = dir.path().join("pebble-config.json");
        std::fs::write(
            &config_file,
            serde_json::to_vec_pretty(&json!({ "pebble": config })).expect("config JSON"),
        )
        .expect("write Pebble config");

        let challtestsrv_log = dir.path().join("challtestsrv.log");
        let challtestsrv = spawn_logged(
            Command::new("pebble-challtestsrv").args([
                "-management",
                &format!("127.0.0.1:{}", ports.challtestsrv),
                "-dns01",
                &format!("127.0.0.1:{}", ports.dns),
                "-http01",
                &challtestsrv_listener(ports.http01),
                "-https01",
                "",
                "-tlsalpn01",
                &challtestsrv_listener(ports.tlsalpn01),
                "-defaultIPv6",
                "",
                "-defaultIPv4",
                "127.0.0.1",
            ]),
            &challtestsrv_log,
        );

        let pebble_log = dir.path().join("pebble.log");
        let mut pebble_command = Command::new("pebble");
        pebble_command
            .arg("-config")
            .arg(&config_file)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", ports.dns))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env(
                "PEBBLE_WFE_NONCEREJECT",
                self.nonce_reject_percent.to_string(),
            )
            .env("PEBBLE_AUTHZREUSE", self.authz_reuse_percent.to_string());
        for (key, value) in &self.env {
            pebble_command.env(key, value);
        }
        let pebble = spawn_logged(&mut pebble_command, &pebble_log);

        let mut instance = Pebble {
            http: HttpClient::trusting(&pki.ca_pem),
            directory_url: format!("https://127.0.0.1:{}/dir", ports.acme),
            ca_bundle,
            pebble_log,
            challtestsrv_log,
            ports,
            pebble: Some(pebble),
            challtestsrv: Some(challtestsrv),
            dir,
        };
        match instance.wait_until_ready().await {
            Ok(()) => Ok(instance),
            Err(why) => Err(format!(
                "{why}\n--- pebble output ---\n{}\n--- pebble-challtestsrv output ---\n{}",
                instance.pebble_log(),
                instance.challtestsrv_log()
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    acme: u16,
    management: u16,
    challtestsrv: u16,
    dns: u16,
    http01: u16,
    tlsalpn01: u16,
}

/// A running Pebble plus pebble-challtestsrv, killed on drop.
pub(crate) struct Pebble {
    http: HttpClient,
    directory_url: String,
    ca_bundle: PathBuf,
    pebble_log: PathBuf,
    challtestsrv_log: PathBuf,
    ports: Ports,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    // Last: removed after the children are gone.
    dir: TempDir,
}

impl Pebble {
    /// A builder for non-default options.
    pub(crate) fn builder() -> PebbleBuilder {
        PebbleBuilder::default()
    }

    /// Starts an instance with the deterministic defaults.
    pub(crate) async fn start() -> Self {
        PebbleBuilder::default().start().await
    }

    /// The ACME directory URL (`https://127.0.0.1:PORT/dir`).
    pub(crate) fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// The generated CA (PEM) that signed Pebble's HTTPS certificate: pass as `--ca-bundle`.
    pub(crate) fn ca_bundle_path(&self) -> &Path {
        &self.ca_bundle
    }

    /// The harness's own temporary directory (config, PKI, logs).
    #[allow(dead_code)]
    pub(crate) fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory object.
    pub(crate) async fn directory(&self) -> Value {
        let (status, body) = self.http.get(&self.directory_url).await;
        assert_eq!(status, StatusCode::OK, "GET {}", self.directory_url);
        serde_json::from_slice(&body).expect("directory is JSON")
    }

    /// The current issuance root (PEM) from the management interface, `/roots/0`.
    pub(crate) async fn roots_pem(&self) -> String {
        self.management_get("/roots/0").await
    }

    /// The current issuing intermediate (PEM), `/intermediates/0`.
    #[allow(dead_code)]
    pub(crate) async fn intermediates_pem(&self) -> String {
        self.management_get("/intermediates/0").await
    }

    /// Root `index` (PEM) from the management interface, `/roots/<index>`: 0 is the
    /// default chain's root, 1.. the alternate roots (`PEBBLE_ALTERNATE_ROOTS`).
    #[allow(dead_code)]
    pub(crate) async fn root_pem(&self, index: usize) -> String {
        self.management_get(&format!("/roots/{index}")).await
    }

    /// A GET on the management interface (`/cert-status-by-serial/<hex>`, ...), whatever
    /// the status.
    #[allow(dead_code)]
    pub(crate) async fn management(&self, path: &str) -> (StatusCode, Bytes) {
        let url = format!("https://127.0.0.1:{}{path}", self.ports.management);
        self.http.get(&url).await
    }

    async fn management_get(&self, path: &str) -> String {
        let url = format!("https://127.0.0.1:{}{path}", self.ports.management);
        let (status, body) = self.http.get(&url).await;
        assert_eq!(status, StatusCode::OK, "GET {url}");
        String::from_utf8(body.to_vec()).expect("UTF-8 PEM")
    }

    /// challtestsrv `/set-txt`: adds (appends) a TXT value. `host` must end with a dot.
    pub(crate) async fn set_txt(&self, host: &str, value: &str) {
        assert!(host.ends_with('.'), "set-txt host must be a FQDN: {host}");
        self.challtestsrv("/set-txt", json!({ "host": host, "value": value }))
            .await;
    }

    /// challtestsrv `/clear-txt`: removes every TXT value of `host` (with trailing dot).
    pub(crate) async fn clear_txt(&self, host: &str) {
        assert!(host.ends_with('.'), "clear-txt host must be a FQDN: {host}");
        self.challtestsrv("/clear-txt", json!({ "host": host }))
            .await;
    }

    /// The address of challtestsrv's mock DNS server (UDP and TCP), `127.0.0.1:PORT`.
    #[allow(dead_code)]
    pub(crate) fn dns_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.ports.dns))
    }

    /// challtestsrv `/set-cname`: answers `host` with a CNAME to `target` (both FQDNs).
    #[allow(dead_code)]
    pub(crate) async fn set_cname(&self, host: &str, target: &str) {
        assert!(host.ends_with('.'), "set-cname host must be a FQDN: {host}");
        assert!(
            target.ends_with('.'),
            "set-cname target must be a FQDN: {target}"
        );
        self.challtestsrv("/set-cname", json!({ "host": host, "target": target }))
            .await;
    }

    /// challtestsrv `/clear-cname`: removes the CNAME of `host` (with trailing dot).
    #[allow(dead_code)]
    pub(crate) async fn clear_cname(&self, host: &str) {
        assert!(
            host.ends_with('.'),
            "clear-cname host must be a FQDN: {host}"
        );
        self.challtestsrv("/clear-cname", json!({ "host": host }))
            .await;
    }

    /// challtestsrv `/add-http01`: serves `content` at `/.well-known/acme-challenge/<token>`.
    pub(crate) async fn add_http01(&self, token: &str, content: &str) {
        self.challtestsrv("/add-http01", json!({ "token": token, "content": content }))
            .await;
    }

    /// challtestsrv `/del-http01`.
    #[allow(dead_code)]
    pub(crate) async fn del_http01(&self, token: &str) {
        self.challtestsrv("/del-http01", json!({ "token": token }))
            .await;
    }

    /// challtestsrv `/add-tlsalpn01`: `content` is the key authorization (it hashes it).
    pub(crate) async fn add_tlsalpn01(&self, host: &str, content: &str) {
        self.challtestsrv(
            "/add-tlsalpn01",
            json!({ "host": host, "content": content }),
        )
        .await;
    }

    /// challtestsrv `/del-tlsalpn01`.
    #[allow(dead_code)]
    pub(crate) async fn del_tlsalpn01(&self, host: &str) {
        self.challtestsrv("/del-tlsalpn01", json!({ "host": host }))
            .await;
    }

    /// challtestsrv `/dns-request-history` for `host` (WITHOUT trailing dot): the DNS
    /// questions its server received for that name, e.g.
    /// `[{"Question":{"Name":"_acme-challenge.a.test.","Qtype":16,"Qclass":1}}]`.
    pub(crate) async fn dns_request_history(&self, host: &str) -> Vec<Value> {
        assert!(
            !host.ends_with('.'),
            "dns-request-history takes the host without the trailing dot: {host}"
        );
        let body = self
            .challtestsrv("/dns-request-history", json!({ "host": host }))
            .await;
        let value: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "dns-request-history answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        match value {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => panic!("dns-request-history answer is not a list: {other}"),
        }
    }

    /// The number of TXT questions the mock DNS server received for `host` (no dot).
    pub(crate) async fn txt_queries_for(&self, host: &str) -> usize {
        const TXT: u64 = 16;
        self.dns_request_history(host)
            .await
            .iter()
            .filter(|event| event["Question"]["Qtype"].as_u64() == Some(TXT))
            .count()
    }

    /// Asks challtestsrv's DNS server for the TXT values of `name` (a FQDN, trailing dot).
    pub(crate) fn txt_lookup(&self, name: &str) -> Vec<String> {
        dns::query_txt(("127.0.0.1", self.ports.dns), name)
    }

    async fn challtestsrv(&self, path: &str, body: Value) -> Bytes {
        let url = format!("http://127.0.0.1:{}{path}", self.ports.challtestsrv);
        let (status, answer) = self.http.post_json(&url, &body).await;
        assert!(
            status.is_success(),
            "POST {url} {body} -> {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        answer
    }

    /// Everything Pebble wrote to stdout and stderr so far.
    pub(crate) fn pebble_log(&self) -> String {
        std::fs::read_to_string(&self.pebble_log).unwrap_or_default()
    }

    /// How many `METHOD URL` requests Pebble has logged so far (Pebble logs
    /// `POST /order-plz -> calling handler()` for every request it handles).
    pub(crate) fn requests_logged(&self, method: &str, url: &str) -> usize {
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
            .unwrap_or(url);
        let needle = format!("{method} {path} -> calling handler()");
        self.pebble_log()
            .lines()
            .filter(|line| line.contains(&needle))
            .count()
    }

    /// Everything pebble-challtestsrv wrote so far.
    pub(crate) fn challtestsrv_log(&self) -> String {
        std::fs::read_to_string(&self.challtestsrv_log).unwrap_or_default()
    }

    /// The harness's HTTP client (trusts the generated CA).
    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// pebble-challtestsrv's management API, `http://127.0.0.1:PORT`, for hook scripts
    /// that publish challenges the way users' scripts call their DNS provider.
    pub(crate) fn challtestsrv_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.challtestsrv)
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + STARTUP_GUARD;
        let mut directory_ok = false;
        let mut dns_ok = false;
        let mut management_ok = false;
        loop {
            for (name, child) in [
                ("pebble", &mut self.pebble),
                ("pebble-challtestsrv", &mut self.challtestsrv),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return Err(format!("{name} exited early with {status}"));
                }
            }
            for (name, log) in [
                ("pebble", self.pebble_log()),
                ("pebble-challtestsrv", self.challtestsrv_log()),
            ] {
                if log.contains("address already in use") {
                    return Err(format!("{name} could not bind one of its ports"));
                }
            }
            if !directory_ok {
                directory_ok = matches!(
                    self.http.try_get(&self.directory_url).await,
                    Ok((StatusCode::OK, _))
                );
            }
            if !management_ok {
                let url = format!(
                    "http://127.0.0.1:{}/dns-request-history",
                    self.ports.challtestsrv
                );
                management_ok = matches!(
                    self.http.try_post_json(&url, &json!({"host": "probe.test"})).await,
                    Ok((status, _)) if status.is_success()
                );
            }
            if !dns_ok {
                dns_ok =
                    dns::query(("127.0.0.1", self.ports.dns), "probe.test.", dns::TYPE_A).is_ok();
            }
            if directory_ok && management_ok && dns_ok {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "servers not ready after {STARTUP_GUARD:?}: directory {directory_ok}, \
                     challtestsrv management {management_ok}, DNS {dns_ok}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [self.pebble.take(), self.challtestsrv.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            // Child::kill sends SIGKILL to exactly this PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let out = File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file handle");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {:?} ({e}); is Debian's `pebble` package installed?",
                command.get_program()
            )
        })
}

/// Picks `n` distinct loopback ports that are free for both TCP and UDP right now.
///
/// Each candidate is checked by binding it. Candidates come from below the kernel's
/// ephemeral range (`ip_local_port_range`) when there is room, so that the many
/// outgoing connections of tests running in parallel (which take ephemeral ports) cannot
/// grab a port between the check and the server's own bind; a process-wide counter keeps
/// parallel tests of this binary apart. Without such room, the kernel picks (`:0`).
fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let window = port_window();
    let mut ports = Vec::new();
    let mut held = Vec::new();
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        assert!(attempts < 10_000, "no free loopback ports");
        let candidate = match window {
            Some((low, high)) => {
                let span = u32::from(high - low);
                let offset =
                    (std::process::id() * 7919 + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
                low + u16::try_from(offset).expect("offset within a u16 span")
            }
            None => 0,
        };
        let Ok(tcp) = TcpListener::bind(("127.0.0.1", candidate)) else {
            continue;
        };
        let port = tcp.local_addr().expect("local addr").port();
        // The DNS port is used for UDP too; keep only ports free for both.
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            if !ports.contains(&port) {
                ports.push(port);
            }
            held.push((tcp, Some(udp)));
        } else {
            held.push((tcp, None));
        }
    }
    ports
}

/// One loopback TCP port that is free right now (see [`free_ports`]), for a responder
/// the test or the program under test binds.
#[allow(dead_code)]
pub(crate) fn free_tcp_port() -> u16 {
    free_ports(1)[0]
}

/// `[low, high)` below the ephemeral port range, if that leaves a useful window.
fn port_window() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = range.split_whitespace().next()?.parse().ok()?;
    let low = 10_000;
    (ephemeral_low > low + 2_000).then_some((low, ephemeral_low))
}

/// Throwaway PKI for Pebble's HTTPS listeners.
struct TestPki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TestPki {
    fn generate() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "acme-bridge test harness CA");
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let mut server_name = DistinguishedName::new();
        server_name.push(DnType::CommonName, "localhost");
        server_params.distinguished_name = server_name;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A tiny HTTP(S) client (hyper-util legacy client + hyper-rustls on aws-lc-rs).
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: HyperClient,
}

impl HttpClient {
    /// Trusts only the CA(s) in `ca_pem`.
    pub(crate) fn trusting(ca_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.expect("CA PEM"))
                .expect("add CA to root store");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// GET; panics on transport errors.
    pub(crate) async fn get(&self, url: &str) -> (StatusCode, Bytes) {
        self.try_get(url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// POST a JSON body; panics on transport errors.
    pub(crate) async fn post_json(&self, url: &str, body: &Value) -> (StatusCode, Bytes) {
        self.try_post_json(url, body)
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }

    async fn try_get(&self, url: &str) -> Result<(StatusCode, Bytes), String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    async fn try_post_json(&self, url: &str, body: &Value) -> Result<(StatusCode, Bytes), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let response = self
            .inner
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// Just enough of a DNS client (RFC 1035 over UDP) to read challtestsrv's answers.
pub(crate) mod dns {
    use std::net::{ToSocketAddrs, UdpSocket};
    use std::time::Duration;

    pub(crate) const TYPE_A: u16 = 1;
    pub(crate) const TYPE_TXT: u16 = 16;

    /// The TXT strings of `name` (each record's character-strings concatenated).
    pub(crate) fn query_txt(server: impl ToSocketAddrs, name: &str) -> Vec<String> {
        query(server, name, TYPE_TXT)
            .unwrap_or_else(|e| panic!("TXT query for {name}: {e}"))
            .into_iter()
            .filter(|(rtype, _)| *rtype == TYPE_TXT)
            .map(|(_, rdata)| {
                let mut text = Vec::new();
                let mut rest = rdata.as_slice();
                while let Some((&len, tail)) = rest.split_first() {
                    let len = usize::from(len).min(tail.len());
                    text.extend_from_slice(&tail[..len]);
                    rest = &tail[len..];
                }
                String::from_utf8_lossy(&text).into_owned()
            })
            .collect()
    }

    /// Sends one question and returns the answer records as (type, rdata).
    pub(crate) fn query(
        server: impl ToSocketAddrs,
        name: &str,
        qtype: u16,
    ) -> Result<Vec<(u16, Vec<u8>)>, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        socket.connect(server).map_err(|e| e.to_string())?;
        let id: u16 = 0x4242;
        let mut packet = Vec::new();
        packet.extend_from_slice(&id.to_be_bytes());
        packet.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
        packet.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
        packet.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        for label in name.trim_end_matches('.').split('.') {
            packet.push(u8::try_from(label.len()).map_err(|e| e.to_string())?);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&1u16.to_be_bytes()); // IN
        socket.send(&packet).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let len = socket.recv(&mut buf).map_err(|e| e.to_string())?;
        parse_answers(&buf[..len], id)
    }

    fn parse_answers(msg: &[u8], id: u16) -> Result<Vec<(u16, Vec<u8>)>, String> {
        let u16_at = |at: usize| -> Result<u16, String> {
            msg.get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated DNS message".to_owned())
        };
        if u16_at(0)? != id {
            return Err("DNS answer with another id".into());
        }
        let rcode = u16_at(2)? & 0x000f;
        if rcode != 0 {
            return Err(format!("DNS rcode {rcode}"));
        }
        let questions = u16_at(4)?;
        let answers = u16_at(6)?;
        let mut at = 12;
        for _ in 0..questions {
            at = skip_name(msg, at)? + 4;
        }
        let mut records = Vec::new();
        for _ in 0..answers {
            at = skip_name(msg, at)?;
            let rtype = u16_at(at)?;
            let rdlength = usize::from(u16_at(at + 8)?);
            let start = at + 10;
            let rdata = msg
                .get(start..start + rdlength)
                .ok_or("truncated rdata")?
                .to_vec();
            records.push((rtype, rdata));
            at = start + rdlength;
        }
        Ok(records)
    }

    fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, String> {
        loop {
            let len = *msg.get(at).ok_or("truncated name")?;
            if len & 0xc0 == 0xc0 {
                return Ok(at + 2);
            }
            if len == 0 {
                return Ok(at + 1);
            }
            at += 1 + usize::from(len);
        }
    }
}
