//! JSON mode speaking certbot-external-auth's lines (`--protocol
//! certbot-external-auth`), for scripts written for that certbot plugin.
//!
//! On stdout: one `perform_challenge` per challenge, all before any reply is read;
//! then one `cleanup` per challenge, `deploy_cert` once when the certificate is
//! stored, and `report` last. The fields are rendered by
//! [`external_auth`](super::external_auth). Nothing of protocol v1 is written.
//!
//! On stdin, as with the plugin, each line — a bare newline or anything else; the
//! content is ignored — means "deployed" for the next challenge in announcement
//! order. A last line without a newline counts too. End of input or the timeout
//! before every challenge is reported end the run as in protocol v1: cleanup, exit
//! 4.

use std::collections::VecDeque;
use std::time::SystemTime;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use super::external_auth::{self, Message};
use super::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::challenge::Challenge;
use crate::error::Error;

/// Speaks certbot-external-auth's JSON lines.
pub struct ExternalAuthJsonSolver<R, W> {
    reader: R,
    writer: W,
    started: SystemTime,
    timeout_seconds: u64,
    lines_read: u64,
    /// Announced challenges not yet reported, in announcement order: (id, domain).
    waiting: VecDeque<(String, String)>,
}

impl ExternalAuthJsonSolver<tokio::io::BufReader<tokio::io::Stdin>, tokio::io::Stdout> {
    /// On the process's stdin and stdout.
    pub fn stdio() -> Self {
        Self::new(
            tokio::io::BufReader::new(tokio::io::stdin()),
            tokio::io::stdout(),
        )
    }
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> ExternalAuthJsonSolver<R, W> {
    /// On any reader and writer (tests use in-memory pipes).
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            started: SystemTime::now(),
            timeout_seconds: 0,
            lines_read: 0,
            waiting: VecDeque::new(),
        }
    }

    /// Writes one message as one line and flushes it.
    async fn send(&mut self, message: &Message) -> Result<(), Error> {
        let mut line = serde_json::to_vec(message).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await.map_err(Error::Output)?;
        self.writer.flush().await.map_err(Error::Output)
    }

    /// Consumes one line, whatever its content or length, without keeping it.
    /// `false` at end of input with nothing read.
    async fn skip_line(&mut self) -> std::io::Result<bool> {
        let mut any = false;
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(any);
            }
            any = true;
            if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
                self.reader.consume(i + 1);
                return Ok(true);
            }
            let len = chunk.len();
            self.reader.consume(len);
        }
    }

    fn waiting_ids(&self) -> String {
        let ids: Vec<&str> = self.waiting.iter().map(|(id, _)| id.as_str()).collect();
        ids.join(", ")
    }
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> Solver for ExternalAuthJsonSolver<R, W> {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        // The plugin said nothing before the first challenge; `deploy_cert` reports
        // this moment as its `timestamp`.
        self.started = SystemTime::now();
        self.timeout_seconds = run.timeout.as_secs();
        Ok(())
    }

    async fn present(
        &mut self,
        challenges: &[Challenge],
        _deadline: &Deadline,
    ) -> Result<(), Error> {
        for challenge in challenges {
            self.waiting
                .push_back((challenge.id.clone(), challenge.domain.clone()));
            self.send(&external_auth::perform_message(challenge))
                .await?;
        }
        Ok(())
    }

    async fn next_ready(&mut self, deadline: &Deadline) -> Result<Readiness, Error> {
        let read = tokio::time::timeout_at(deadline.at, self.skip_line()).await;
        match read {
            Err(_) => Err(Error::Timeout {
                ids: self.waiting_ids(),
                seconds: self.timeout_seconds,
            }),
            Ok(Err(e)) => {
                tracing::warn!("cannot read stdin: {e}");
                Err(Error::Eof {
                    ids: self.waiting_ids(),
                })
            }
            Ok(Ok(false)) => Err(Error::Eof {
                ids: self.waiting_ids(),
            }),
            Ok(Ok(true)) => {
                self.lines_read += 1;
                let (id, domain) = self.waiting.pop_front().ok_or_else(|| {
                    Error::Internal("a reply was awaited with no challenge waiting".into())
                })?;
                tracing::info!(
                    "input line {}: challenge {id} for {domain} is deployed",
                    self.lines_read
                );
                Ok(Readiness::Ready(id))
            }
        }
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        for d in done {
            self.send(&external_auth::cleanup_message(
                d.challenge,
                d.outcome,
                d.problem,
            ))
            .await?;
        }
        Ok(())
    }

    async fn finish(&mut self, result: Result<&Issued, &Error>) -> Result<(), Error> {
        if let Ok(issued) = result {
            self.send(&external_auth::deploy_message(issued, self.started))
                .await?;
        }
        let report = external_auth::report_message(&external_auth::run_report(result));
        self.send(&report).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, BufReader};

    use super::*;
    use crate::challenge::{ChallengeSource, ChallengeType};
    use crate::protocol::Outcome;

    fn challenges() -> Vec<Challenge> {
        ["example.com", "*.example.com"]
            .iter()
            .enumerate()
            .map(|(i, domain)| {
                Challenge::compute(
                    ChallengeSource {
                        id: format!("c{}", i + 1),
                        domain,
                        identifier: "example.com",
                        wildcard: domain.starts_with("*."),
                        token: if i == 0 { "tokenA" } else { "tokenB" },
                        challenge_type: ChallengeType::Dns01,
                    },
                    "thumb",
                )
                .unwrap()
            })
            .collect()
    }

    fn run_info() -> RunInfo {
        RunInfo {
            name: "example.com".into(),
            domains: vec!["example.com".into(), "*.example.com".into()],
            challenge_type: ChallengeType::Dns01,
            timeout: Duration::from_secs(60),
        }
    }

    async fn lines_of(mut out: tokio::io::DuplexStream) -> Vec<Value> {
        let mut text = String::new();
        out.read_to_string(&mut text).await.unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn any_line_reports_the_next_challenge_in_order() {
        let input: &[u8] = b"\nwhatever it says\nlast line without newline";
        let (writer, out) = tokio::io::duplex(1 << 20);
        let mut solver = ExternalAuthJsonSolver::new(BufReader::new(input), writer);
        let cs = challenges();
        let deadline = Deadline::after(Duration::from_secs(60));
        solver.start(&run_info()).await.unwrap();
        solver.present(&cs, &deadline).await.unwrap();
        assert_eq!(
            solver.next_ready(&deadline).await.unwrap(),
            Readiness::Ready("c1".into())
        );
        assert_eq!(
            solver.next_ready(&deadline).await.unwrap(),
            Readiness::Ready("c2".into())
        );
        let done: Vec<Done<'_>> = cs
            .iter()
            .map(|c| Done {
                challenge: c,
                outcome: Outcome::Valid,
                problem: None,
            })
            .collect();
        solver.cleanup(&done).await.unwrap();
        let err = Error::Internal("test".into());
        solver.finish(Err(&err)).await.unwrap();
        drop(solver);
        let lines = lines_of(out).await;
        let cmds: Vec<&str> = lines.iter().map(|l| l["cmd"].as_str().unwrap()).collect();
        assert_eq!(
            cmds,
            [
                "perform_challenge",
                "perform_challenge",
                "cleanup",
                "cleanup",
                "report"
            ]
        );
        assert!(lines.iter().all(|l| l.get("type") != Some(&"hello".into())));
        assert_eq!(lines[0]["token"], "tokenA");
        assert_eq!(lines[1]["token"], "tokenB");
        assert_eq!(lines[2]["status"], "valid");
        assert_eq!(lines[4]["messages"][0]["priority"], 0);
    }

    #[tokio::test]
    async fn end_of_input_before_every_challenge_is_reported_is_eof() {
        let input: &[u8] = b"\n";
        let (writer, _out) = tokio::io::duplex(1 << 20);
        let mut solver = ExternalAuthJsonSolver::new(BufReader::new(input), writer);
        let cs = challenges();
        let deadline = Deadline::after(Duration::from_secs(60));
        solver.present(&cs, &deadline).await.unwrap();
        assert_eq!(
            solver.next_ready(&deadline).await.unwrap(),
            Readiness::Ready("c1".into())
        );
        let err = solver.next_ready(&deadline).await.unwrap_err();
        assert!(matches!(&err, Error::Eof { ids } if ids == "c2"), "{err}");
    }

    #[tokio::test]
    async fn silence_until_the_deadline_is_a_timeout() {
        let (_keep_open, input) = tokio::io::duplex(64);
        let (writer, _out) = tokio::io::duplex(1 << 20);
        let mut solver = ExternalAuthJsonSolver::new(BufReader::new(input), writer);
        let cs = challenges();
        let deadline = Deadline::after(Duration::from_millis(50));
        solver.present(&cs, &deadline).await.unwrap();
        let err = solver.next_ready(&deadline).await.unwrap_err();
        assert!(
            matches!(&err, Error::Timeout { ids, .. } if ids == "c1, c2"),
            "{err}"
        );
    }
}
