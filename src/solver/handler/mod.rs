//! Handler mode: challenges go to a program the user already has — a dehydrated
//! hook script, a pair of certbot manual hooks, or a certbot-external-auth handler.
//!
//! Every call goes through [`crate::runner`] (argv, never a shell; a timeout per
//! call; output to the log, never to stdout). How the [`Solver`] steps map onto the
//! conventions:
//!
//! | step | dehydrated | certbot | external-auth |
//! |---|---|---|---|
//! | `start` | unknown-hook check, `startup_hook` | — | — |
//! | `present` | `deploy_challenge` per challenge (or one chained call) | auth hook per challenge | `pre-perform`, `perform` per challenge, `post-perform` |
//! | `cleanup` | `invalid_challenge` for invalid ones, `clean_challenge` (chained: one call) | cleanup hook per challenge | `pre-cleanup`, `cleanup` per challenge, `post-cleanup` |
//! | `finish` | `deploy_cert` or `request_failure`, then `exit_hook [ERROR]` | — | `deploy_cert` |
//!
//! Every challenge is deployed before any is reported ready. A deploying hook that
//! fails (or times out) stops the deployment: no challenge is reported ready, so
//! none is answered to the CA, and the run fails (exit 4). Cleanup runs for every
//! challenge whose deploying hook was called, whatever happened; a failing cleanup
//! hook is logged and does not stop the others.

mod cbot;
mod certbot;
mod dehydrated;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::webroot::Webroot;
use super::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::challenge::{Challenge, ChallengeKind, ChallengeType};
use crate::error::Error;
use crate::keys::KeyType;
use crate::protocol::Outcome;
use crate::runner::{Hook, HookOutput};
use crate::store::{CertName, Lineage, Store};

/// Which convention the handler speaks, with its programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStyle {
    /// dehydrated: `HOOK deploy_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE`, …
    Dehydrated {
        /// The hook script.
        hook: Hook,
        /// `HOOK_CHAIN=yes`: one `deploy_challenge` / `clean_challenge` call with
        /// every challenge's arguments.
        chain: bool,
    },
    /// certbot's manual hooks: `CERTBOT_*` variables, one call per challenge.
    Certbot {
        /// Deploys one challenge.
        auth: Hook,
        /// Removes one challenge.
        cleanup: Option<Hook>,
    },
    /// certbot-external-auth's handler: `HANDLER perform` etc., every message field
    /// in the environment.
    ExternalAuth {
        /// The handler.
        handler: Hook,
    },
}

impl HookStyle {
    /// The style's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dehydrated { .. } => "dehydrated",
            Self::Certbot { .. } => "certbot",
            Self::ExternalAuth { .. } => "external-auth",
        }
    }
}

/// Everything handler mode needs besides the run itself.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// The convention and its programs.
    pub style: HookStyle,
    /// A web server's document root: http-01 token files are also written to
    /// `DIR/.well-known/acme-challenge/` (and removed at cleanup), as dehydrated
    /// does with `WELLKNOWN`.
    pub webroot: Option<PathBuf>,
    /// The configuration directory (dehydrated's `BASEDIR`).
    pub config_dir: PathBuf,
    /// The certificate key's algorithm (dehydrated's `KEY_ALGO`).
    pub key_type: KeyType,
}

/// `--mode handler`. See the module documentation.
#[derive(Debug)]
pub struct HandlerSolver {
    style: HookStyle,
    config_dir: PathBuf,
    key_type: KeyType,
    webroot: Option<Webroot>,
    /// dehydrated's exported variables, set by `start`.
    env: Vec<(String, String)>,
    /// Every challenge presented, in order.
    presented: Vec<Challenge>,
    /// Challenges whose deploying hook was called, with the auth hook's stdout
    /// (certbot's `CERTBOT_AUTH_OUTPUT`).
    deployed: BTreeMap<String, String>,
    /// When the run began (certbot-external-auth's `timestamp`).
    started: SystemTime,
    /// Whether external-auth's `pre-perform` was called (then the `pre-cleanup` /
    /// `post-cleanup` pair is owed).
    pre_performed: bool,
    /// What `next_ready` reports, in order.
    verdicts: VecDeque<Readiness>,
}

/// A failed hook call: the challenge it stops and why.
type Stop = (String, String);

impl HandlerSolver {
    /// A solver for `config`. Fails when `--webroot` is not an existing directory.
    pub fn new(config: HandlerConfig) -> Result<Self, Error> {
        let webroot = config
            .webroot
            .map(Webroot::document_root)
            .transpose()
            .map_err(|e| Error::Config(format!("--webroot: {e}")))?;
        Ok(Self {
            style: config.style,
            config_dir: config.config_dir,
            key_type: config.key_type,
            webroot,
            env: Vec::new(),
            presented: Vec::new(),
            deployed: BTreeMap::new(),
            started: SystemTime::now(),
            pre_performed: false,
            verdicts: VecDeque::new(),
        })
    }

    /// Announces a certificate that was checked and kept as it is (renewal found it
    /// not due): dehydrated's `unchanged_cert DOMAIN KEYFILE CERTFILE FULLCHAINFILE
    /// CHAINFILE`, certbot-external-auth's `unchanged_cert`. certbot's hooks have no
    /// such call. Call after [`Solver::start`].
    pub async fn unchanged_cert(
        &mut self,
        domains: &[String],
        lineage: &Lineage,
    ) -> Result<(), Error> {
        match self.style.clone() {
            HookStyle::Dehydrated { hook, .. } => {
                let args = [
                    "unchanged_cert".to_owned(),
                    domains.first().cloned().unwrap_or_default(),
                    path(&lineage.privkey),
                    path(&lineage.cert),
                    path(&lineage.fullchain),
                    path(&lineage.chain),
                ];
                run_ok(&hook, &args, &self.env, "unchanged_cert")
                    .await
                    .map(drop)
                    .map_err(Error::Hook)
            }
            HookStyle::Certbot { .. } => Ok(()),
            HookStyle::ExternalAuth { handler } => {
                let message = cbot::unchanged_cert_message(domains, lineage, self.started);
                self.handler_call(&handler, "unchanged_cert", Some(&message))
                    .await
                    .map(drop)
                    .map_err(Error::Hook)
            }
        }
    }

    /// A renewal found the certificate not due: the whole run a hook sees for it.
    /// dehydrated: `startup_hook`, `unchanged_cert …`, `exit_hook`;
    /// certbot-external-auth: `unchanged_cert`; certbot's hooks: nothing.
    pub async fn unchanged(&mut self, run: &RunInfo, lineage: &Lineage) -> Result<(), Error> {
        if matches!(self.style, HookStyle::Certbot { .. }) {
            return Ok(());
        }
        self.start(run).await?;
        let result = self.unchanged_cert(&run.domains, lineage).await;
        if let HookStyle::Dehydrated { hook, .. } = self.style.clone() {
            let mut args = vec!["exit_hook".to_owned()];
            if let Err(e) = &result {
                args.push(e.to_string());
            }
            if let Err(reason) = run_ok(&hook, &args, &self.env, "exit_hook").await {
                tracing::warn!("{reason}");
            }
        }
        result
    }

    /// dehydrated's exported variables for this run.
    fn dehydrated_env(&self, run: &RunInfo) -> Result<Vec<(String, String)>, Error> {
        let store = Store::open(&self.config_dir)?;
        let name = CertName::new(&run.name)?;
        let live = store.live_dir(&name);
        let certdir = live.parent().map(Path::to_path_buf).unwrap_or(live);
        let mut env = vec![
            (
                "CHALLENGETYPE".to_owned(),
                run.challenge_type.as_str().to_owned(),
            ),
            ("BASEDIR".to_owned(), path(store.root())),
            ("CERTDIR".to_owned(), path(&certdir)),
            ("CONFIG".to_owned(), path(&store.renewal_path(&name))),
            ("COMMAND".to_owned(), dehydrated::COMMAND.to_owned()),
            (
                "KEY_ALGO".to_owned(),
                dehydrated::key_algo(self.key_type).to_owned(),
            ),
            ("altnames".to_owned(), run.domains.join(" ")),
        ];
        if let Some(webroot) = &self.webroot {
            env.push(("WELLKNOWN".to_owned(), path(&webroot.dir())));
        }
        Ok(env)
    }

    /// Writes the http-01 token file into `--webroot`, when one is given.
    fn write_token(&mut self, challenge: &Challenge) -> Result<(), Stop> {
        if let (Some(webroot), ChallengeKind::Http01 { http }) =
            (&mut self.webroot, &challenge.kind)
        {
            let written = webroot
                .write(http)
                .map_err(|e| (challenge.id.clone(), format!("--webroot: {e}")))?;
            tracing::info!(
                "{} ({}): wrote {}",
                challenge.domain,
                challenge.id,
                written.display()
            );
        }
        Ok(())
    }

    /// Calls a certbot-external-auth handler command with `message` in the
    /// environment. `Ok(None)` when the handler says `NotImplemented`.
    async fn handler_call(
        &self,
        handler: &Hook,
        command: &str,
        message: Option<&super::external_auth::Message>,
    ) -> Result<Option<HookOutput>, String> {
        let env = message.map(cbot::env).unwrap_or_default();
        let label = match message
            .and_then(|m| m.get("domain"))
            .and_then(|d| d.as_str())
        {
            Some(domain) => format!("{command} {domain}"),
            None => command.to_owned(),
        };
        match handler.run(&[command], &env, &label).await {
            Ok(out) if out.success() => Ok(Some(out)),
            Ok(out) if out.not_implemented() => {
                tracing::info!("the handler does not implement {command}");
                Ok(None)
            }
            Ok(out) => Err(format!("{label} {}", out.describe())),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn present_dehydrated(&mut self, hook: &Hook, chain: bool) -> Result<(), Stop> {
        let challenges = self.presented.clone();
        if chain {
            for challenge in &challenges {
                self.write_token(challenge)?;
            }
            let mut args = vec!["deploy_challenge".to_owned()];
            for challenge in &challenges {
                self.deployed.insert(challenge.id.clone(), String::new());
                args.extend(dehydrated::triple(challenge));
            }
            let label = format!("deploy_challenge ({} chained)", challenges.len());
            run_ok(hook, &args, &self.env, &label)
                .await
                .map_err(|reason| (challenges[0].id.clone(), reason))?;
            return Ok(());
        }
        for challenge in &challenges {
            self.write_token(challenge)?;
            self.deployed.insert(challenge.id.clone(), String::new());
            let [domain, token, value] = dehydrated::triple(challenge);
            let label = format!("deploy_challenge {domain}");
            run_ok(
                hook,
                &["deploy_challenge".to_owned(), domain, token, value],
                &self.env,
                &label,
            )
            .await
            .map_err(|reason| (challenge.id.clone(), reason))?;
        }
        Ok(())
    }

    async fn present_certbot(&mut self, auth: &Hook) -> Result<(), Stop> {
        let challenges = self.presented.clone();
        for (index, challenge) in challenges.iter().enumerate() {
            let stop = |reason: String| (challenge.id.clone(), reason);
            self.write_token(challenge)?;
            let env = certbot::env(&challenges, index).ok_or_else(|| {
                stop(format!(
                    "certbot's hooks have no form for {}",
                    challenge.challenge_type()
                ))
            })?;
            self.deployed.insert(challenge.id.clone(), String::new());
            let label = format!("auth-hook {}", challenge.identifier);
            let out = auth
                .run(&[] as &[&str], &env, &label)
                .await
                .map_err(|e| stop(e.to_string()))?;
            self.deployed
                .insert(challenge.id.clone(), certbot::auth_output(&out.stdout));
            if !out.success() {
                return Err(stop(format!("{label} {}", out.describe())));
            }
        }
        Ok(())
    }

    async fn present_external_auth(&mut self, handler: &Hook) -> Result<(), Stop> {
        let challenges = self.presented.clone();
        let first = challenges[0].id.clone();
        self.pre_performed = true;
        self.handler_call(handler, "pre-perform", None)
            .await
            .map_err(|reason| (first.clone(), reason))?;
        for challenge in &challenges {
            let stop = |reason: String| (challenge.id.clone(), reason);
            self.write_token(challenge)?;
            self.deployed.insert(challenge.id.clone(), String::new());
            let message = cbot::perform_message(challenge);
            match self.handler_call(handler, "perform", Some(&message)).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(stop(
                        "the handler does not implement perform: nothing deployed the challenge"
                            .into(),
                    ));
                }
                Err(reason) => return Err(stop(reason)),
            }
        }
        self.handler_call(handler, "post-perform", None)
            .await
            .map_err(|reason| (first, reason))?;
        Ok(())
    }

    async fn cleanup_dehydrated(
        &self,
        hook: &Hook,
        chain: bool,
        done: &[&Done<'_>],
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for d in done.iter().filter(|d| d.outcome == Outcome::Invalid) {
            let challenge = d.challenge;
            let args = [
                "invalid_challenge".to_owned(),
                challenge.identifier.clone(),
                dehydrated::invalid_response(challenge, d.problem),
            ];
            let label = format!("invalid_challenge {}", challenge.identifier);
            if let Err(reason) = run_ok(hook, &args, &self.env, &label).await {
                errors.push(reason);
            }
        }
        if chain {
            if !done.is_empty() {
                let mut args = vec!["clean_challenge".to_owned()];
                for d in done {
                    args.extend(dehydrated::triple(d.challenge));
                }
                let label = format!("clean_challenge ({} chained)", done.len());
                if let Err(reason) = run_ok(hook, &args, &self.env, &label).await {
                    errors.push(reason);
                }
            }
            return errors;
        }
        for d in done {
            let [domain, token, value] = dehydrated::triple(d.challenge);
            let label = format!("clean_challenge {domain}");
            let args = ["clean_challenge".to_owned(), domain, token, value];
            if let Err(reason) = run_ok(hook, &args, &self.env, &label).await {
                errors.push(reason);
            }
        }
        errors
    }

    async fn cleanup_certbot(&self, hook: &Hook, done: &[&Done<'_>]) -> Vec<String> {
        let mut errors = Vec::new();
        for d in done {
            let challenge = d.challenge;
            let Some(index) = self.presented.iter().position(|c| c.id == challenge.id) else {
                continue;
            };
            let Some(mut env) = certbot::env(&self.presented, index) else {
                continue;
            };
            let output = self
                .deployed
                .get(&challenge.id)
                .cloned()
                .unwrap_or_default();
            env.push(("CERTBOT_AUTH_OUTPUT".to_owned(), output));
            let label = format!("cleanup-hook {}", challenge.identifier);
            if let Err(reason) = run_ok(hook, &[] as &[&str], &env, &label).await {
                errors.push(reason);
            }
        }
        errors
    }

    async fn cleanup_external_auth(&self, handler: &Hook, done: &[&Done<'_>]) -> Vec<String> {
        let mut errors = Vec::new();
        if self.pre_performed
            && let Err(reason) = self.handler_call(handler, "pre-cleanup", None).await
        {
            errors.push(reason);
        }
        for d in done {
            let message = cbot::cleanup_message(d);
            if let Err(reason) = self.handler_call(handler, "cleanup", Some(&message)).await {
                errors.push(reason);
            }
        }
        if self.pre_performed
            && let Err(reason) = self.handler_call(handler, "post-cleanup", None).await
        {
            errors.push(reason);
        }
        errors
    }

    async fn finish_dehydrated(
        &self,
        hook: &Hook,
        result: Result<&Issued, &Error>,
    ) -> Result<(), Error> {
        let mut failure = None;
        match result {
            Ok(issued) => {
                let lineage = &issued.lineage;
                let args = [
                    "deploy_cert".to_owned(),
                    issued.domains.first().cloned().unwrap_or_default(),
                    path(&lineage.privkey),
                    path(&lineage.cert),
                    path(&lineage.fullchain),
                    path(&lineage.chain),
                    time::OffsetDateTime::now_utc().unix_timestamp().to_string(),
                ];
                if let Err(reason) = run_ok(hook, &args, &self.env, "deploy_cert").await {
                    failure = Some(reason);
                }
            }
            Err(err) => {
                if let Some(details) = dehydrated::request_failure(err) {
                    let mut args = vec!["request_failure".to_owned()];
                    args.extend(details);
                    if let Err(reason) = run_ok(hook, &args, &self.env, "request_failure").await {
                        tracing::error!("{reason}");
                    }
                }
            }
        }
        let mut args = vec!["exit_hook".to_owned()];
        match (result, &failure) {
            (Err(err), _) => args.push(err.to_string()),
            (Ok(_), Some(reason)) => args.push(reason.clone()),
            (Ok(_), None) => {}
        }
        if let Err(reason) = run_ok(hook, &args, &self.env, "exit_hook").await {
            // dehydrated ignores exit_hook's status, and so do we.
            tracing::warn!("{reason}");
        }
        failure.map_or(Ok(()), |reason| Err(Error::Hook(reason)))
    }
}

/// `--deploy-hook` (certbot's convention, any mode): runs `hook` once the
/// certificate is stored, with `RENEWED_LINEAGE` (the live directory) and
/// `RENEWED_DOMAINS` (the names, space separated). A failure is reported as an
/// error; the stored certificate stays.
pub async fn run_deploy_hook(hook: &Hook, issued: &Issued) -> Result<(), Error> {
    let env = [
        ("RENEWED_LINEAGE".to_owned(), path(&issued.lineage.live_dir)),
        ("RENEWED_DOMAINS".to_owned(), issued.domains.join(" ")),
    ];
    run_ok(hook, &[] as &[&str], &env, "deploy-hook")
        .await
        .map(|_| tracing::info!("deploy-hook: done"))
        .map_err(|reason| {
            Error::Hook(format!(
                "{reason} (the certificate is stored in {})",
                issued.lineage.live_dir.display()
            ))
        })
}

/// Runs a hook; its output when it exited 0, else why not.
async fn run_ok<A: AsRef<std::ffi::OsStr>>(
    hook: &Hook,
    args: &[A],
    env: &[(String, String)],
    label: &str,
) -> Result<HookOutput, String> {
    match hook.run(args, env, label).await {
        Ok(out) if out.success() => Ok(out),
        Ok(out) => Err(format!("{label} {}", out.describe())),
        Err(e) => Err(e.to_string()),
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Solver for HandlerSolver {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        self.started = SystemTime::now();
        if let Some(webroot) = &self.webroot {
            if run.challenge_type != ChallengeType::Http01 {
                return Err(Error::Config(format!(
                    "--webroot serves http-01 challenges, not {} (use --challenge http-01 or drop --webroot)",
                    run.challenge_type
                )));
            }
            webroot
                .check_writable()
                .map_err(|e| Error::Config(format!("--webroot: {e}")))?;
        }
        match self.style.clone() {
            HookStyle::Dehydrated { hook, .. } => {
                self.env = self.dehydrated_env(run)?;
                match hook
                    .run(
                        &[dehydrated::BROKEN_HOOK_NAME],
                        &self.env,
                        "unknown-hook check",
                    )
                    .await
                {
                    Ok(out) if out.success() => {}
                    Ok(out) => {
                        return Err(Error::Config(format!(
                            "{} ({} {} when called with the unknown hook name {}; a dehydrated hook must exit 0 and do nothing for hook names it does not know)",
                            dehydrated::BROKEN_HOOK_MESSAGE,
                            hook.program().display(),
                            out.describe(),
                            dehydrated::BROKEN_HOOK_NAME
                        )));
                    }
                    Err(e) => {
                        return Err(Error::Config(format!(
                            "{} ({e})",
                            dehydrated::BROKEN_HOOK_MESSAGE
                        )));
                    }
                }
                run_ok(&hook, &["startup_hook"], &self.env, "startup_hook")
                    .await
                    .map_err(Error::Hook)?;
            }
            HookStyle::Certbot { .. } => {
                if run.challenge_type == ChallengeType::TlsAlpn01 {
                    return Err(Error::Config(
                        "certbot's hook convention has no form for tls-alpn-01; use --hook-style dehydrated or external-auth, or another challenge type".into(),
                    ));
                }
            }
            HookStyle::ExternalAuth { .. } => {}
        }
        Ok(())
    }

    async fn present(&mut self, challenges: &[Challenge], _: &Deadline) -> Result<(), Error> {
        self.presented = challenges.to_vec();
        if challenges.is_empty() {
            return Ok(());
        }
        let outcome = match self.style.clone() {
            HookStyle::Dehydrated { hook, chain } => self.present_dehydrated(&hook, chain).await,
            HookStyle::Certbot { auth, .. } => self.present_certbot(&auth).await,
            HookStyle::ExternalAuth { handler } => self.present_external_auth(&handler).await,
        };
        self.verdicts = match outcome {
            Ok(()) => challenges
                .iter()
                .map(|c| {
                    tracing::info!(
                        "{} ({}): deployed by the {} hook",
                        c.domain,
                        c.id,
                        self.style.name()
                    );
                    Readiness::Ready(c.id.clone())
                })
                .collect(),
            // Nothing is reported ready: no challenge is answered to the CA.
            Err((id, reason)) => {
                tracing::error!("{reason}");
                VecDeque::from([Readiness::Failed { id, reason }])
            }
        };
        Ok(())
    }

    async fn next_ready(&mut self, _: &Deadline) -> Result<Readiness, Error> {
        super::next_queued(&mut self.verdicts, "handler")
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        let deployed: Vec<&Done<'_>> = done
            .iter()
            .filter(|d| self.deployed.contains_key(&d.challenge.id))
            .collect();
        let mut errors = match self.style.clone() {
            HookStyle::Dehydrated { hook, chain } => {
                self.cleanup_dehydrated(&hook, chain, &deployed).await
            }
            HookStyle::Certbot {
                cleanup: Some(hook),
                ..
            } => self.cleanup_certbot(&hook, &deployed).await,
            HookStyle::Certbot { cleanup: None, .. } => Vec::new(),
            HookStyle::ExternalAuth { handler } => {
                self.cleanup_external_auth(&handler, &deployed).await
            }
        };
        self.pre_performed = false;
        for d in done {
            self.deployed.remove(&d.challenge.id);
            if let (Some(webroot), ChallengeKind::Http01 { http }) =
                (&mut self.webroot, &d.challenge.kind)
            {
                match webroot.remove(http) {
                    Ok(true) => tracing::info!(
                        "{} ({}): removed the token file",
                        d.challenge.domain,
                        d.challenge.id
                    ),
                    Ok(false) => {}
                    Err(e) => errors.push(format!("--webroot: {e}")),
                }
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        // Logged by the caller.
        Err(Error::Hook(format!("cleanup: {}", errors.join("; "))))
    }

    async fn finish(&mut self, result: Result<&Issued, &Error>) -> Result<(), Error> {
        match self.style.clone() {
            HookStyle::Dehydrated { hook, .. } => self.finish_dehydrated(&hook, result).await,
            HookStyle::Certbot { .. } => Ok(()),
            HookStyle::ExternalAuth { handler } => match result {
                Ok(issued) => {
                    let message = cbot::deploy_cert_message(issued, self.started);
                    self.handler_call(&handler, "deploy_cert", Some(&message))
                        .await
                        .map(drop)
                        .map_err(Error::Hook)
                }
                Err(_) => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::challenge::ChallengeSource;

    /// A hook that records `$1 $2 …` (tab-separated) and, for external-auth, the
    /// `domain` and `cbot_cmd` variables; `NotImplemented` for `HOOK_NOT_IMPLEMENTED`.
    const RECORDER: &str = r#"#!/bin/sh
log="$(dirname "$0")/calls.log"
( IFS="$(printf '\t')"; printf '%s\n' "$*" ) >> "$log"
if [ -n "${cbot_cmd:-}" ]; then printf 'env\t%s\t%s\n' "$cbot_cmd" "$domain" >> "$log"; fi
if [ "$1" = "$HOOK_NOT_IMPLEMENTED_FOR" ]; then echo NotImplemented; exit 1; fi
exit 0
"#;

    struct Fixture {
        dir: tempfile::TempDir,
        hook: Hook,
    }

    impl Fixture {
        fn new(not_implemented_for: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("hook");
            let script = RECORDER.replace("$HOOK_NOT_IMPLEMENTED_FOR", not_implemented_for);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            let hook = Hook::new(&path, Duration::from_secs(20)).unwrap();
            Self { dir, hook }
        }

        fn solver(&self, style: HookStyle) -> HandlerSolver {
            HandlerSolver::new(HandlerConfig {
                style,
                webroot: None,
                config_dir: self.dir.path().join("config"),
                key_type: KeyType::Rsa2048,
            })
            .unwrap()
        }

        fn calls(&self) -> Vec<Vec<String>> {
            std::fs::read_to_string(self.dir.path().join("calls.log"))
                .unwrap_or_default()
                .lines()
                .map(|l| l.split('\t').map(str::to_owned).collect())
                .collect()
        }

        fn lineage(&self) -> Lineage {
            let live = self.dir.path().join("config/live/a.test");
            Lineage {
                name: CertName::new("a.test").unwrap(),
                version: 2,
                cert: live.join("cert.pem"),
                chain: live.join("chain.pem"),
                fullchain: live.join("fullchain.pem"),
                privkey: live.join("privkey.pem"),
                live_dir: live,
            }
        }
    }

    fn run_info() -> RunInfo {
        RunInfo {
            name: "a.test".into(),
            domains: vec!["a.test".into(), "www.a.test".into()],
            challenge_type: ChallengeType::Dns01,
            timeout: Duration::from_secs(60),
        }
    }

    fn challenge() -> Challenge {
        Challenge::compute(
            ChallengeSource {
                id: "c1".into(),
                domain: "a.test",
                identifier: "a.test",
                wildcard: false,
                token: "tok",
                challenge_type: ChallengeType::Dns01,
            },
            "thumb",
        )
        .unwrap()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn unchanged_cert_for_dehydrated_and_external_auth() {
        let fixture = Fixture::new("");
        let lineage = fixture.lineage();
        let domains = vec!["a.test".to_owned(), "www.a.test".to_owned()];
        let mut solver = fixture.solver(HookStyle::Dehydrated {
            hook: fixture.hook.clone(),
            chain: false,
        });
        block_on(async {
            solver.start(&run_info()).await.unwrap();
            solver.unchanged_cert(&domains, &lineage).await.unwrap();
        });
        let live = |f: &str| lineage.live_dir.join(f).display().to_string();
        assert_eq!(
            fixture.calls().last().unwrap(),
            &[
                "unchanged_cert".to_owned(),
                "a.test".into(),
                live("privkey.pem"),
                live("cert.pem"),
                live("fullchain.pem"),
                live("chain.pem"),
            ]
        );

        let mut solver = fixture.solver(HookStyle::ExternalAuth {
            handler: fixture.hook.clone(),
        });
        block_on(async {
            solver.start(&run_info()).await.unwrap();
            solver.unchanged_cert(&domains, &lineage).await.unwrap();
        });
        let calls = fixture.calls();
        assert_eq!(
            calls[calls.len() - 2..],
            [
                vec!["unchanged_cert".to_owned()],
                vec!["env".to_owned(), "deploy_cert".into(), "a.test".into()],
            ]
        );
    }

    #[test]
    fn a_perform_that_is_not_implemented_fails_the_challenge_and_is_cleaned_up() {
        let fixture = Fixture::new("perform");
        let mut solver = fixture.solver(HookStyle::ExternalAuth {
            handler: fixture.hook.clone(),
        });
        let c = challenge();
        let deadline = Deadline::after(Duration::from_secs(60));
        let readiness = block_on(async {
            solver.start(&run_info()).await.unwrap();
            solver
                .present(std::slice::from_ref(&c), &deadline)
                .await
                .unwrap();
            let readiness = solver.next_ready(&deadline).await.unwrap();
            solver
                .cleanup(&[Done {
                    challenge: &c,
                    outcome: Outcome::NotValidated,
                    problem: None,
                }])
                .await
                .unwrap();
            readiness
        });
        let Readiness::Failed { id, reason } = readiness else {
            panic!("{readiness:?}")
        };
        assert_eq!(id, "c1");
        assert!(reason.contains("does not implement perform"), "{reason}");
        let names: Vec<String> = fixture
            .calls()
            .into_iter()
            .filter(|c| c[0] != "env")
            .map(|c| c[0].clone())
            .collect();
        // post-perform is not reached; pre-cleanup / post-cleanup pair with pre-perform.
        assert_eq!(
            names,
            [
                "pre-perform",
                "perform",
                "pre-cleanup",
                "cleanup",
                "post-cleanup"
            ]
        );
    }

    #[test]
    fn the_dehydrated_environment() {
        let fixture = Fixture::new("");
        let mut solver = fixture.solver(HookStyle::Dehydrated {
            hook: fixture.hook.clone(),
            chain: true,
        });
        block_on(solver.start(&run_info())).unwrap();
        let get = |k: &str| {
            solver
                .env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("KEY_ALGO").as_deref(), Some("rsa"));
        assert_eq!(get("altnames").as_deref(), Some("a.test www.a.test"));
        assert_eq!(get("COMMAND").as_deref(), Some("sign_domains"));
        assert_eq!(get("WELLKNOWN"), None, "only with --webroot");
        let root = std::path::absolute(fixture.dir.path().join("config")).unwrap();
        assert_eq!(
            get("CONFIG"),
            Some(root.join("renewal/a.test.json").display().to_string())
        );
        // The start-up check and startup_hook ran, in that order.
        let names: Vec<String> = fixture.calls().into_iter().map(|c| c[0].clone()).collect();
        assert_eq!(names, [dehydrated::BROKEN_HOOK_NAME, "startup_hook"]);
    }
}
