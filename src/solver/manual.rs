//! Manual mode: instructions for a person at a terminal.
//!
//! Everything is shown first — every TXT record grouped under its DNS name (a
//! wildcard and its apex share one name and need *both* values), every file with its
//! exact content, every tls-alpn-01 certificate with the path it was written to —
//! each with a command to check it. Then one question: "press Enter when all are in
//! place". One confirmation for the whole run, because a person adds records in one
//! sitting in a DNS provider's form, and a prompt per record invites pressing Enter
//! out of habit before the last one is in; nothing reaches the CA before that Enter.
//!
//! The conversation runs on the controlling terminal (`/dev/tty`), not on stdin,
//! stdout or stderr: it reaches the person even when those are redirected, and
//! stdout stays empty. Input typed before the question is discarded. `q`, `quit`,
//! `abort` (then Enter) or Ctrl-D abort the run: every challenge is reported failed
//! ("aborted by the user"), nothing is answered to the CA, and the cleanup text says
//! what to remove. `--timeout` bounds the wait.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::challenge::{Challenge, ChallengeKind, ChallengeType, TlsAlpnCertificate};
use crate::error::Error;
use crate::protocol::Outcome;

/// The controlling terminal.
const TERMINAL: &str = "/dev/tty";

/// The reason given for every challenge when the person aborts.
pub const ABORTED: &str = "aborted by the user";

/// What the reader thread saw on the terminal.
#[derive(Debug)]
enum TtyInput {
    Line(String),
    Eof,
    Failed(std::io::Error),
}

/// What a line typed at the question means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Go,
    Abort,
    Unclear,
}

impl Answer {
    fn of(line: &str) -> Self {
        match line.trim().to_ascii_lowercase().as_str() {
            "" | "y" | "yes" | "ok" | "done" | "ready" | "go" => Self::Go,
            "q" | "quit" | "abort" | "exit" | "n" | "no" | "stop" => Self::Abort,
            _ => Self::Unclear,
        }
    }
}

/// A tls-alpn-01 certificate and key, written for the person to serve.
#[derive(Debug)]
struct AlpnFiles {
    id: String,
    cert: PathBuf,
    key: PathBuf,
}

/// Shows instructions on the terminal and waits for the person's Enter.
pub struct ManualSolver {
    tty: File,
    input: Option<mpsc::UnboundedReceiver<TtyInput>>,
    run: Option<RunInfo>,
    /// Presented and not reported yet, in order.
    pending: Vec<String>,
    /// Every presented id, in the order shown.
    order: Vec<String>,
    /// Decided, not handed out yet.
    queue: VecDeque<Readiness>,
    alpn_dir: Option<tempfile::TempDir>,
    alpn_files: Vec<AlpnFiles>,
}

impl ManualSolver {
    /// Opens the controlling terminal for reading and writing. Fails with a
    /// configuration error (exit 2) when there is none — cron, CI, `ssh host cmd`
    /// without `-t`, a service — so that the check can run before anything is
    /// sent to the CA.
    pub fn open() -> Result<Self, Error> {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(TERMINAL)
            .map_err(|e| {
                Error::Config(format!(
                    "--mode manual needs a terminal to show instructions and read your Enter, but {TERMINAL} cannot be opened ({e}); run it from an interactive shell (ssh -t for a remote command), or use --mode json for automation"
                ))
            })?;
        Ok(Self::new(tty))
    }

    /// On an already opened terminal (or anything readable and writable).
    pub fn new(tty: File) -> Self {
        Self {
            tty,
            input: None,
            run: None,
            pending: Vec::new(),
            order: Vec::new(),
            queue: VecDeque::new(),
            alpn_dir: None,
            alpn_files: Vec::new(),
        }
    }

    /// Writes to the terminal; if that fails (the terminal went away), to stderr,
    /// so that at least a log keeps what the person must remove.
    fn say(&mut self, text: &str) {
        let written = self
            .tty
            .write_all(text.as_bytes())
            .and_then(|()| self.tty.flush());
        if let Err(e) = written {
            tracing::warn!("cannot write to {TERMINAL} ({e}); writing to stderr instead");
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    /// Starts reading lines from the terminal in a thread of its own (a blocking
    /// read must not hold the runtime), after discarding what was typed ahead.
    fn input(&mut self) -> Result<&mut mpsc::UnboundedReceiver<TtyInput>, Error> {
        if self.input.is_none() {
            // An Enter pressed while the order was being created must not count as
            // the answer to a question not yet asked. Not a terminal (tests, pipes):
            // nothing to discard.
            let _ = rustix::termios::tcflush(&self.tty, rustix::termios::QueueSelector::IFlush);
            let reader = self
                .tty
                .try_clone()
                .map_err(|e| Error::Internal(format!("cannot read {TERMINAL}: {e}")))?;
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::Builder::new()
                .name("tty-reader".into())
                .spawn(move || read_lines(reader, &tx))
                .map_err(|e| Error::Internal(format!("cannot start the terminal reader: {e}")))?;
            self.input = Some(rx);
        }
        self.input
            .as_mut()
            .ok_or_else(|| Error::Internal("the terminal reader is gone".into()))
    }

    /// Asks the one question and queues the answer for every pending challenge.
    async fn ask(&mut self, deadline: &Deadline) -> Result<(), Error> {
        let what = match self.run.as_ref().map(|r| r.challenge_type) {
            Some(ChallengeType::Dns01) => "ALL records are in place",
            Some(ChallengeType::Http01) => "ALL files are served",
            _ => "ALL certificates are served",
        };
        let prompt = format!("\nPress Enter when {what} (q and Enter, or Ctrl-D, aborts): ");
        self.say(&prompt);
        loop {
            let input = self.input()?;
            let received = tokio::time::timeout_at(deadline.at, input.recv()).await;
            let reason = match received {
                Err(_) => {
                    let seconds = self.run.as_ref().map_or(0, |r| r.timeout.as_secs());
                    self.say(&format!(
                        "\n\nTime is up ({deadline}, --timeout): nothing was sent to the CA.\n",
                        deadline = deadline.wall
                    ));
                    return Err(Error::Timeout {
                        ids: self.pending.join(", "),
                        seconds,
                    });
                }
                Ok(Some(TtyInput::Line(line))) => match Answer::of(&line) {
                    Answer::Go => None,
                    Answer::Abort => Some(ABORTED.to_owned()),
                    Answer::Unclear => {
                        self.say(&format!(
                            "Not understood: {:?}. Press Enter alone to go on, or type q and Enter to abort: ",
                            line.trim()
                        ));
                        continue;
                    }
                },
                Ok(Some(TtyInput::Eof) | None) => {
                    self.say("\n");
                    Some(ABORTED.to_owned())
                }
                Ok(Some(TtyInput::Failed(e))) => Some(format!("cannot read {TERMINAL}: {e}")),
            };
            let pending = std::mem::take(&mut self.pending);
            match reason {
                None => {
                    self.say(&format!(
                        "Asking the CA to validate {}.\n",
                        plural(pending.len(), "challenge", "challenges")
                    ));
                    self.queue.extend(pending.into_iter().map(Readiness::Ready));
                }
                Some(reason) => {
                    self.say("Aborting: nothing more is sent to the CA.\n");
                    self.queue
                        .extend(pending.into_iter().map(|id| Readiness::Failed {
                            id,
                            reason: reason.clone(),
                        }));
                }
            }
            return Ok(());
        }
    }

    /// Writes each tls-alpn-01 certificate and key, 0600, into a private directory.
    fn write_alpn_files(&mut self, challenges: &[Challenge]) -> Result<(), Error> {
        let alpn: Vec<(&str, &TlsAlpnCertificate)> = challenges
            .iter()
            .filter_map(|c| match &c.kind {
                ChallengeKind::TlsAlpn01 { tls_alpn } => Some((c.id.as_str(), tls_alpn)),
                _ => None,
            })
            .collect();
        if alpn.is_empty() {
            return Ok(());
        }
        let dir = tempfile::Builder::new()
            .prefix("acme-bridge-manual-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::Internal(format!("cannot create a private directory: {e}")))?;
        for (id, tls) in alpn {
            // `sni` is a validated LDH name: safe as a file name.
            let cert = dir.path().join(format!("{}.cert.pem", tls.sni));
            let key = dir.path().join(format!("{}.key.pem", tls.sni));
            write_private(&cert, &tls.certificate_pem)?;
            write_private(&key, &tls.private_key_pem)?;
            self.alpn_files.push(AlpnFiles {
                id: id.to_owned(),
                cert,
                key,
            });
        }
        self.alpn_dir = Some(dir);
        Ok(())
    }

    /// Deletes the files of these challenges; the directory goes with the last.
    fn remove_alpn_files(&mut self, ids: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        self.alpn_files.retain(|f| {
            if !ids.contains(&f.id.as_str()) {
                return true;
            }
            for path in [&f.cert, &f.key] {
                if let Err(e) = std::fs::remove_file(path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    problems.push(format!("cannot delete {}: {e}", path.display()));
                }
            }
            false
        });
        if self.alpn_files.is_empty()
            && let Some(dir) = self.alpn_dir.take()
        {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                problems.push(format!("cannot delete {}: {e}", path.display()));
            }
        }
        problems
    }
}

/// Reads lines until end of input or an error, sending each to the solver.
fn read_lines(tty: File, tx: &mpsc::UnboundedSender<TtyInput>) {
    let mut reader = BufReader::new(tty);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let message = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => TtyInput::Eof,
            Ok(_) => TtyInput::Line(String::from_utf8_lossy(&buf).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => TtyInput::Failed(e),
        };
        let last = !matches!(message, TtyInput::Line(_));
        if tx.send(message).is_err() || last {
            return;
        }
    }
}

/// Creates `path` (which must not exist) with mode 0600 and writes `text`.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
}

impl Solver for ManualSolver {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        self.run = Some(run.clone());
        self.say(&format!(
            "\n==> acme-bridge, manual mode: certificate \"{}\" for {} ({}). Creating the order…\n",
            run.name,
            run.domains.join(", "),
            run.challenge_type
        ));
        Ok(())
    }

    async fn present(
        &mut self,
        challenges: &[Challenge],
        deadline: &Deadline,
    ) -> Result<(), Error> {
        // In the order of the command line, whatever order the CA lists them in.
        let mut ordered = challenges.to_vec();
        if let Some(run) = &self.run {
            ordered.sort_by_key(|c| run.domains.iter().position(|d| *d == c.domain));
        }
        self.write_alpn_files(&ordered)?;
        self.pending = ordered.iter().map(|c| c.id.clone()).collect();
        self.order = self.pending.clone();
        let timeout = self.run.as_ref().map(|r| r.timeout).unwrap_or_default();
        let text = instructions(
            &ordered,
            &self.alpn_files,
            self.alpn_dir.as_ref().map(|d| d.path()),
            deadline,
            timeout,
        );
        self.say(&text);
        Ok(())
    }

    async fn next_ready(&mut self, deadline: &Deadline) -> Result<Readiness, Error> {
        loop {
            if let Some(readiness) = self.queue.pop_front() {
                return Ok(readiness);
            }
            if self.pending.is_empty() {
                return Err(Error::Internal(
                    "asked for a challenge while none is pending".into(),
                ));
            }
            self.ask(deadline).await?;
        }
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        let ids: Vec<&str> = done.iter().map(|d| d.challenge.id.as_str()).collect();
        let dir = self.alpn_dir.as_ref().map(|d| d.path().to_owned());
        let problems = self.remove_alpn_files(&ids);
        // In the order the instructions showed them.
        let mut ordered = done.to_vec();
        ordered.sort_by_key(|d| self.order.iter().position(|id| *id == d.challenge.id));
        let mut text = cleanup_text(&ordered);
        if let Some(dir) = dir
            && self.alpn_dir.is_none()
        {
            let _ = writeln!(
                text,
                "The challenge certificates and keys in {} were deleted.",
                dir.display()
            );
        }
        for problem in &problems {
            let _ = writeln!(text, "Warning: {problem}");
        }
        self.say(&text);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Internal(problems.join("; ")))
        }
    }

    async fn finish(&mut self, result: Result<&Issued, &Error>) -> Result<(), Error> {
        let text = match result {
            Ok(issued) => {
                let l = &issued.lineage;
                format!(
                    "\n==> Done: certificate \"{name}\" for {domains} (version {version}, serial {serial}, valid until {until})\n    \
                     {fullchain}   certificate + intermediates: point your server here\n    \
                     {privkey}   its private key\n    \
                     (cert.pem and chain.pem are beside them)\n",
                    name = l.name,
                    domains = issued.domains.join(", "),
                    version = l.version,
                    serial = issued.info.serial,
                    until = crate::time::rfc3339(issued.info.not_after),
                    fullchain = l.fullchain.display(),
                    privkey = l.privkey.display(),
                )
            }
            Err(err) => format!("\n==> No certificate: {err}\n"),
        };
        self.say(&text);
        Ok(())
    }
}

/// `1 value`, `2 values`.
fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// "BOTH" for two, "ALL 3" for more.
fn all_of(n: usize) -> String {
    if n == 2 {
        "BOTH".to_owned()
    } else {
        format!("ALL {n}")
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Challenges grouped by a key, in order of first appearance.
fn grouped<'a>(
    challenges: &'a [Challenge],
    key: impl Fn(&'a Challenge) -> &'a str,
) -> Vec<(&'a str, Vec<&'a Challenge>)> {
    let mut groups: Vec<(&str, Vec<&Challenge>)> = Vec::new();
    for c in challenges {
        let k = key(c);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(c),
            None => groups.push((k, vec![c])),
        }
    }
    groups
}

fn dns_name(c: &Challenge) -> &str {
    match &c.kind {
        ChallengeKind::Dns01 { dns } => &dns.name,
        _ => &c.identifier,
    }
}

/// Everything the person must do, before the question.
fn instructions(
    challenges: &[Challenge],
    alpn_files: &[AlpnFiles],
    alpn_dir: Option<&Path>,
    deadline: &Deadline,
    timeout: std::time::Duration,
) -> String {
    let mut out = String::new();
    let Some(first) = challenges.first() else {
        return out;
    };
    match first.challenge_type() {
        ChallengeType::Dns01 => dns_instructions(&mut out, challenges),
        ChallengeType::Http01 => http_instructions(&mut out, challenges),
        ChallengeType::TlsAlpn01 => alpn_instructions(&mut out, challenges, alpn_files, alpn_dir),
    }
    let _ = writeln!(
        out,
        "\nNothing is sent to the CA until you press Enter; then it checks at once, and a wrong or missing\nanswer fails the order. Deadline: {} (--timeout {}); after it, the run stops.",
        deadline.wall,
        humantime::format_duration(timeout)
    );
    out
}

fn dns_instructions(out: &mut String, challenges: &[Challenge]) {
    let groups = grouped(challenges, dns_name);
    let _ = writeln!(
        out,
        "\nThe CA checks DNS TXT records (dns-01). Add {} under {}:",
        plural(challenges.len(), "TXT value", "TXT values"),
        plural(groups.len(), "name", "names")
    );
    for (name, members) in &groups {
        let domains: Vec<&str> = members.iter().map(|c| c.domain.as_str()).collect();
        let _ = writeln!(out, "\n  {name}    (for {})", and_list(&domains));
        if members.len() > 1 {
            let _ = writeln!(
                out,
                "    add {} TXT values to {name} — {} records with the same name; do not let one replace the other:",
                all_of(members.len()),
                members.len()
            );
        }
        for c in members {
            if let ChallengeKind::Dns01 { dns } = &c.kind {
                let _ = writeln!(out, "      TXT  {}", dns.value);
            }
        }
        let _ = writeln!(out, "    check:  dig +short TXT {name}");
        let _ = writeln!(
            out,
            "            {}",
            if members.len() > 1 {
                "should print each of these values, in quotes"
            } else {
                "should print this value, in quotes"
            }
        );
    }
    let _ = writeln!(
        out,
        "\nNames are complete, with the final dot. If your DNS provider's form adds the zone itself,\nenter only the part before the zone{}.\nKeep other TXT records at these names. A new record can take a minute or more to reach\nall of your DNS servers: check before you press Enter.",
        relative_example(challenges)
    );
}

/// ` (e.g. _acme-challenge.www if the zone is example.com)`, a guess at the first
/// name's zone, labelled as such; empty for names too short to guess.
fn relative_example(challenges: &[Challenge]) -> String {
    let Some(first) = challenges.first() else {
        return String::new();
    };
    let labels: Vec<&str> = first.identifier.split('.').collect();
    if labels.len() < 2 {
        return String::new();
    }
    let (host, zone) = labels.split_at(labels.len() - 2);
    let mut relative = "_acme-challenge".to_owned();
    for label in host {
        relative.push('.');
        relative.push_str(label);
    }
    format!(" (e.g. {relative} if the zone is {})", zone.join("."))
}

fn http_instructions(out: &mut String, challenges: &[Challenge]) {
    let _ = writeln!(
        out,
        "\nThe CA fetches files over plain HTTP on port 80 (http-01). Serve {}:",
        plural(challenges.len(), "file", "files")
    );
    for c in challenges {
        let ChallengeKind::Http01 { http } = &c.kind else {
            continue;
        };
        let file = format!(".well-known/acme-challenge/{}", http.file_name);
        let _ = writeln!(out, "\n  {}    (for {})", http.url, c.domain);
        let _ = writeln!(
            out,
            "    file:     {file}    (under the web root of {})",
            c.identifier
        );
        let _ = writeln!(out, "    content:  {}", http.body);
        let _ = writeln!(out, "              exactly this one line");
        // Token and key authorization are base64url (checked in challenge.rs):
        // safe inside single quotes.
        let _ = writeln!(
            out,
            "    e.g. in the web root:  mkdir -p .well-known/acme-challenge && printf '%s' '{}' > {file}",
            http.body
        );
        let _ = writeln!(out, "    check:    curl {}", http.url);
        let _ = writeln!(out, "              should print the content above");
    }
}

fn alpn_instructions(
    out: &mut String,
    challenges: &[Challenge],
    files: &[AlpnFiles],
    dir: Option<&Path>,
) {
    let _ = writeln!(
        out,
        "\nThe CA connects with TLS to port 443, asking for ALPN protocol \"acme-tls/1\" (tls-alpn-01).\nServe {}:",
        plural(
            challenges.len(),
            "challenge certificate",
            "challenge certificates"
        )
    );
    if let Some(dir) = dir {
        let _ = writeln!(
            out,
            "(certificates and keys are in {}, readable only by you; deleted when this run ends)",
            dir.display()
        );
    }
    for c in challenges {
        let ChallengeKind::TlsAlpn01 { tls_alpn } = &c.kind else {
            continue;
        };
        let Some(f) = files.iter().find(|f| f.id == c.id) else {
            continue;
        };
        let sni = &tls_alpn.sni;
        let _ = writeln!(out, "\n  {sni}    (for {})", c.domain);
        let _ = writeln!(out, "    certificate:  {}", f.cert.display());
        let _ = writeln!(out, "    key:          {}", f.key.display());
        let _ = writeln!(
            out,
            "    serve:        on port 443 of {sni}: to TLS connections with SNI {sni} that offer ALPN acme-tls/1,\n                  present this certificate and select acme-tls/1 (other connections keep your usual certificate)"
        );
        let _ = writeln!(
            out,
            "    e.g.:         openssl s_server -www -accept 443 -alpn acme-tls/1 -cert {} -key {}",
            f.cert.display(),
            f.key.display()
        );
        let _ = writeln!(
            out,
            "                  (as root, when nothing else listens on port 443 there; keep it running until the cleanup below)"
        );
        let _ = writeln!(
            out,
            "    check:        openssl s_client -connect {sni}:443 -servername {sni} -alpn acme-tls/1 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        );
        match fingerprint(&tls_alpn.certificate_pem) {
            Some(fp) => {
                let _ = writeln!(
                    out,
                    "                  should print SHA256 Fingerprint={fp}"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "                  should print the fingerprint of the certificate file"
                );
            }
        }
        let _ = writeln!(
            out,
            "    for servers that build the certificate themselves: key authorization {}\n                  (acmeIdentifier value {})",
            c.key_authorization, tls_alpn.digest
        );
    }
}

/// The SHA-256 fingerprint of a PEM certificate, as openssl prints it (`AB:CD:…`).
fn fingerprint(pem: &str) -> Option<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    Some(
        hash.as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// What became of a challenge, in words.
fn outcome_text(done: &Done<'_>) -> String {
    match done.outcome {
        Outcome::Valid => "validated".into(),
        Outcome::Invalid => match done.problem {
            Some(problem) => format!("the CA found it invalid: {problem}"),
            None => "the CA found it invalid".into(),
        },
        Outcome::NotValidated => "never sent to the CA".into(),
        Outcome::Unknown => "sent to the CA; the run ended before its verdict".into(),
    }
}

/// Exactly what to remove, grouped like the instructions.
fn cleanup_text(done: &[Done<'_>]) -> String {
    let mut out = String::new();
    if done.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n==> Cleanup: remove what you added for {}:",
        plural(done.len(), "challenge", "challenges")
    );
    let mut names: Vec<&str> = Vec::new();
    for d in done {
        let name = dns_name(d.challenge);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let members: Vec<&Done<'_>> = done
            .iter()
            .filter(|d| dns_name(d.challenge) == name)
            .collect();
        for d in &members {
            let c = d.challenge;
            let outcome = outcome_text(d);
            match &c.kind {
                ChallengeKind::Dns01 { dns } => {
                    if d.challenge.id == members[0].challenge.id {
                        let _ = writeln!(
                            out,
                            "  {name}: remove {} (keep any other TXT values there)",
                            if members.len() > 1 {
                                "these TXT values"
                            } else {
                                "this TXT value"
                            }
                        );
                    }
                    let _ = writeln!(
                        out,
                        "      TXT  {}    ({} — {outcome})",
                        dns.value, c.domain
                    );
                }
                ChallengeKind::Http01 { http } => {
                    let _ = writeln!(
                        out,
                        "  remove .well-known/acme-challenge/{} from the web root of {}    ({outcome})",
                        http.file_name, c.identifier
                    );
                }
                ChallengeKind::TlsAlpn01 { tls_alpn } => {
                    let _ = writeln!(
                        out,
                        "  stop serving the challenge certificate for {} on port 443 (restore your usual TLS setup)    ({outcome})",
                        tls_alpn.sni
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::ChallengeSource;
    use crate::protocol::Problem;

    const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn challenge(id: &str, domain: &str, token: &str, kind: ChallengeType) -> Challenge {
        let identifier = domain.trim_start_matches("*.");
        Challenge::compute(
            ChallengeSource {
                id: id.into(),
                domain,
                identifier,
                wildcard: domain.starts_with("*."),
                token,
                challenge_type: kind,
            },
            THUMB,
        )
        .expect("challenge data")
    }

    fn dns_value(c: &Challenge) -> &str {
        match &c.kind {
            ChallengeKind::Dns01 { dns } => &dns.value,
            _ => panic!("not dns-01"),
        }
    }

    fn deadline() -> Deadline {
        Deadline::after(std::time::Duration::from_secs(600))
    }

    #[test]
    fn wildcard_and_apex_values_are_grouped_under_their_one_name() {
        let cs = [
            challenge("c1", "example.com", "tokenA", ChallengeType::Dns01),
            challenge("c2", "www.example.com", "tokenB", ChallengeType::Dns01),
            challenge("c3", "*.example.com", "tokenC", ChallengeType::Dns01),
        ];
        let text = instructions(
            &cs,
            &[],
            None,
            &deadline(),
            std::time::Duration::from_secs(600),
        );
        assert!(
            text.contains("add BOTH TXT values to _acme-challenge.example.com."),
            "{text}"
        );
        assert!(text.contains("Add 3 TXT values under 2 names"), "{text}");
        assert!(
            text.contains("(for example.com and *.example.com)"),
            "{text}"
        );
        assert!(
            text.contains("dig +short TXT _acme-challenge.example.com.\n"),
            "{text}"
        );
        assert!(
            text.contains("dig +short TXT _acme-challenge.www.example.com.\n"),
            "{text}"
        );
        // Both values follow their shared name, before the other name.
        let apex = text
            .find("\n  _acme-challenge.example.com.")
            .expect("apex group");
        let www = text
            .find("\n  _acme-challenge.www.example.com.")
            .expect("www group");
        for c in [&cs[0], &cs[2]] {
            let at = text
                .find(&format!("TXT  {}", dns_value(c)))
                .expect("value shown");
            assert!(apex < at && at < www, "{text}");
        }
        assert!(text.find(&format!("TXT  {}", dns_value(&cs[1]))).unwrap() > www);
        // The predecessor's bug: never the bare domain as the record's name.
        assert!(!text.contains("\n  example.com"), "{text}");
        assert!(
            text.contains("(e.g. _acme-challenge if the zone is example.com)"),
            "{text}"
        );
    }

    #[test]
    fn http01_shows_the_url_the_file_and_its_exact_content() {
        let c = challenge("c1", "example.com", "tok_en-1", ChallengeType::Http01);
        let text = instructions(
            std::slice::from_ref(&c),
            &[],
            None,
            &deadline(),
            std::time::Duration::from_secs(90),
        );
        assert!(
            text.contains(
                "\n  http://example.com/.well-known/acme-challenge/tok_en-1    (for example.com)"
            ),
            "{text}"
        );
        assert!(
            text.contains("file:     .well-known/acme-challenge/tok_en-1"),
            "{text}"
        );
        assert!(
            text.contains(&format!("content:  {}\n", c.key_authorization)),
            "{text}"
        );
        assert!(
            text.contains("check:    curl http://example.com/.well-known/acme-challenge/tok_en-1"),
            "{text}"
        );
        assert!(text.contains("--timeout 1m 30s"), "{text}");
    }

    #[test]
    fn tls_alpn01_files_are_private_and_removed_at_cleanup() {
        let c = challenge("c1", "example.com", "tokenA", ChallengeType::TlsAlpn01);
        let tty = tempfile::tempfile().expect("a file standing in for the terminal");
        let mut solver = ManualSolver::new(tty);
        solver
            .write_alpn_files(std::slice::from_ref(&c))
            .expect("written");
        let dir = solver.alpn_dir.as_ref().expect("dir").path().to_owned();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let f = &solver.alpn_files[0];
        assert_eq!(mode(&f.cert), 0o600);
        assert_eq!(mode(&f.key), 0o600);
        let ChallengeKind::TlsAlpn01 { tls_alpn } = &c.kind else {
            panic!("not tls-alpn-01")
        };
        assert_eq!(
            std::fs::read_to_string(&f.cert).unwrap(),
            tls_alpn.certificate_pem
        );
        assert_eq!(
            std::fs::read_to_string(&f.key).unwrap(),
            tls_alpn.private_key_pem
        );
        let text = instructions(
            std::slice::from_ref(&c),
            &solver.alpn_files,
            Some(&dir),
            &deadline(),
            std::time::Duration::from_secs(600),
        );
        assert!(
            text.contains(&format!("certificate:  {}", f.cert.display())),
            "{text}"
        );
        assert!(text.contains("-alpn acme-tls/1 -cert "), "{text}");
        assert!(
            text.contains(
                "openssl s_client -connect example.com:443 -servername example.com -alpn acme-tls/1"
            ),
            "{text}"
        );
        assert!(text.contains("SHA256 Fingerprint="), "{text}");
        assert!(solver.remove_alpn_files(&["c1"]).is_empty());
        assert!(!dir.exists(), "the private directory is removed");
    }

    #[test]
    fn cleanup_names_every_value_with_its_outcome() {
        let cs = [
            challenge("c1", "example.com", "tokenA", ChallengeType::Dns01),
            challenge("c2", "*.example.com", "tokenC", ChallengeType::Dns01),
        ];
        let problem = Problem {
            kind: Some("urn:ietf:params:acme:error:unauthorized".into()),
            detail: Some("wrong TXT".into()),
            status: Some(403),
            subproblems: Vec::new(),
        };
        let done = [
            Done {
                challenge: &cs[0],
                outcome: Outcome::Valid,
                problem: None,
            },
            Done {
                challenge: &cs[1],
                outcome: Outcome::Invalid,
                problem: Some(&problem),
            },
        ];
        let text = cleanup_text(&done);
        assert!(
            text.contains("_acme-challenge.example.com.: remove these TXT values"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "TXT  {}    (example.com — validated)",
                dns_value(&cs[0])
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "TXT  {}    (*.example.com — the CA found it invalid: wrong TXT",
                dns_value(&cs[1])
            )),
            "{text}"
        );
    }

    #[test]
    fn answers_are_read_generously() {
        assert_eq!(Answer::of("\n"), Answer::Go);
        assert_eq!(Answer::of("  yes \n"), Answer::Go);
        assert_eq!(Answer::of("q\n"), Answer::Abort);
        assert_eq!(Answer::of("ABORT\n"), Answer::Abort);
        assert_eq!(Answer::of("foo\n"), Answer::Unclear);
    }
}
