//! JSON mode: the protocol of [`crate::protocol`] over stdout and stdin.

use std::collections::BTreeSet;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::challenge::Challenge;
use crate::error::Error;
use crate::protocol::{
    Awaiting, CertificateMessage, ChallengeMessage, Cleanup, ErrorKind, ErrorMessage, Hello, Input,
    Output, PROTOCOL_VERSION,
};

/// The longest input line accepted; longer lines are reported and skipped.
const MAX_LINE: usize = 64 * 1024;

/// Speaks the JSON-lines protocol.
pub struct JsonSolver<R, W> {
    reader: R,
    writer: W,
    line_number: u64,
    timeout_seconds: u64,
    /// The certificate's name, from `start`.
    name: String,
    announced: BTreeSet<String>,
    pending: BTreeSet<String>,
}

impl JsonSolver<tokio::io::BufReader<tokio::io::Stdin>, tokio::io::Stdout> {
    /// On the process's stdin and stdout.
    pub fn stdio() -> Self {
        Self::new(
            tokio::io::BufReader::new(tokio::io::stdin()),
            tokio::io::stdout(),
        )
    }
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> JsonSolver<R, W> {
    /// On any reader and writer (tests use in-memory pipes).
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            line_number: 0,
            timeout_seconds: 0,
            name: String::new(),
            announced: BTreeSet::new(),
            pending: BTreeSet::new(),
        }
    }

    /// The certificate's name once known.
    fn named(&self) -> Option<String> {
        (!self.name.is_empty()).then(|| self.name.clone())
    }

    /// Writes one message as one line and flushes it.
    async fn send(&mut self, message: &Output) -> Result<(), Error> {
        let mut line = serde_json::to_vec(message).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await.map_err(Error::Output)?;
        self.writer.flush().await.map_err(Error::Output)
    }

    /// Reports a bad input line on the protocol and in the log; the run goes on.
    async fn input_error(&mut self, message: String, id: Option<String>) -> Result<(), Error> {
        tracing::warn!("{message}");
        self.send(&Output::Error(ErrorMessage {
            fatal: false,
            kind: ErrorKind::Input,
            message,
            id,
            name: self.named(),
            problem: None,
        }))
        .await
    }

    /// The next line; see [`read_line`].
    async fn read_line(&mut self) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
        let line = read_line(&mut self.reader).await?;
        if line.is_some() {
            self.line_number += 1;
        }
        Ok(line)
    }

    fn waiting_ids(&self) -> String {
        self.pending.iter().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Interprets one line: a readiness report, or `None` after reporting a problem.
    async fn interpret(&mut self, line: &[u8]) -> Result<Option<Readiness>, Error> {
        let n = self.line_number;
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(e) => {
                self.input_error(format!("input line {n} is not JSON ({e}); ignored"), None)
                    .await?;
                return Ok(None);
            }
        };
        let input: Input = match serde_json::from_value(value) {
            Ok(input) => input,
            Err(e) => {
                self.input_error(
                    format!(
                        "input line {n} is not a reply this program understands ({e}); expected {{\"type\":\"ready\",\"id\":…}} or {{\"type\":\"failed\",\"id\":…,\"reason\":…}}"
                    ),
                    None,
                )
                .await?;
                return Ok(None);
            }
        };
        let (id, readiness) = match input {
            Input::Ready { id } => (id.clone(), Readiness::Ready(id)),
            Input::Failed { id, reason } => (
                id.clone(),
                Readiness::Failed {
                    id,
                    reason: reason.unwrap_or_else(|| "no reason given".into()),
                },
            ),
        };
        if self.pending.remove(&id) {
            return Ok(Some(readiness));
        }
        let message = if self.announced.contains(&id) {
            format!("input line {n}: challenge {id:?} was already answered; ignored")
        } else {
            format!(
                "input line {n}: unknown challenge id {id:?}; waiting for {}",
                self.waiting_ids()
            )
        };
        self.input_error(message, Some(id)).await?;
        Ok(None)
    }
}

/// The next line, without its newline; `None` at end of input. Lines longer than
/// 64 KiB are consumed and reported as `Err(length)`.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(Ok(buf)));
    }
    if buf.len() <= MAX_LINE {
        return Ok(Some(Ok(buf))); // the last line, without a newline
    }
    // Skip the rest of an overlong line.
    let mut skipped = buf.len();
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                skipped += i;
                reader.consume(i + 1);
                break;
            }
            None => {
                let len = chunk.len();
                skipped += len;
                reader.consume(len);
            }
        }
    }
    Ok(Some(Err(skipped)))
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> Solver for JsonSolver<R, W> {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        self.timeout_seconds = run.timeout.as_secs();
        self.name.clone_from(&run.name);
        self.send(&Output::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            program: "acme-bridge".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            name: run.name.clone(),
            domains: run.domains.clone(),
            challenge_type: run.challenge_type,
            timeout_seconds: run.timeout.as_secs(),
        }))
        .await
    }

    async fn present(
        &mut self,
        challenges: &[Challenge],
        deadline: &Deadline,
    ) -> Result<(), Error> {
        for challenge in challenges {
            self.announced.insert(challenge.id.clone());
            self.pending.insert(challenge.id.clone());
            self.send(&Output::Challenge(ChallengeMessage {
                name: self.name.clone(),
                challenge: challenge.clone(),
                deadline: deadline.wall.clone(),
            }))
            .await?;
        }
        self.send(&Output::Awaiting(Awaiting {
            name: self.name.clone(),
            ids: challenges.iter().map(|c| c.id.clone()).collect(),
            deadline: deadline.wall.clone(),
        }))
        .await
    }

    async fn next_ready(&mut self, deadline: &Deadline) -> Result<Readiness, Error> {
        loop {
            let line = match tokio::time::timeout_at(deadline.at, self.read_line()).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        ids: self.waiting_ids(),
                        seconds: self.timeout_seconds,
                    });
                }
                Ok(Err(e)) => {
                    tracing::warn!("cannot read stdin: {e}");
                    return Err(Error::Eof {
                        ids: self.waiting_ids(),
                    });
                }
                Ok(Ok(None)) => {
                    return Err(Error::Eof {
                        ids: self.waiting_ids(),
                    });
                }
                Ok(Ok(Some(line))) => line,
            };
            match line {
                Err(len) => {
                    let n = self.line_number;
                    self.input_error(
                        format!("input line {n} is {len} bytes long (limit {MAX_LINE}); ignored"),
                        None,
                    )
                    .await?;
                }
                Ok(line) if line.iter().all(u8::is_ascii_whitespace) => {}
                Ok(line) => {
                    if let Some(readiness) = self.interpret(&line).await? {
                        return Ok(readiness);
                    }
                }
            }
        }
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        for d in done {
            self.send(&Output::Cleanup(Cleanup {
                name: self.name.clone(),
                challenge: d.challenge.clone(),
                outcome: d.outcome,
                problem: d.problem.cloned(),
            }))
            .await?;
        }
        Ok(())
    }

    async fn finish(&mut self, result: Result<&Issued, &Error>) -> Result<(), Error> {
        let message = match result {
            Ok(issued) => Output::Certificate(CertificateMessage::from(issued)),
            Err(err) => Output::Error(ErrorMessage {
                fatal: true,
                kind: err.kind(),
                message: err.to_string(),
                id: err.challenge_id().map(str::to_owned),
                name: self.named(),
                problem: err.problem().cloned(),
            }),
        };
        self.send(&message).await
    }
}
