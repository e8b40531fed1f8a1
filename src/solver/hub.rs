//! One stdin and one stdout shared by several JSON-mode runs (`renew --parallel`).
//!
//! Each run gets its own reader and writer. Output lines are forwarded whole, so
//! runs interleave line by line, never within a line. Input lines are routed by
//! their challenge `id` (`NAME/cN`, see [`crate::protocol`]) to the run of
//! certificate `NAME`; a line no run claims gets a non-fatal `error` on stdout.
//! A run that speaks certbot-external-auth's protocol, whose replies carry no id,
//! attaches exclusively: every line goes to it (the caller makes sure it is alone).
//! At the end of input every attached run sees end of input, and so does every run
//! that attaches later.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::mode::{BoxReader, BoxWriter};
use crate::protocol::{ErrorKind, ErrorMessage, Output};

/// The separator between a certificate's name and its own challenge id.
pub const ID_SEPARATOR: char = '/';

/// The shared stdin and stdout.
pub struct Hub {
    state: RefCell<State>,
    out: UnboundedSender<Vec<u8>>,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<String, UnboundedSender<Vec<u8>>>,
    exclusive: Option<String>,
    closed: bool,
    line_number: u64,
}

/// Keeps a run attached; detaches it when dropped.
pub struct Attachment {
    hub: Rc<Hub>,
    name: String,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut state = self.hub.state.borrow_mut();
        state.routes.remove(&self.name);
        if state.exclusive.as_deref() == Some(&self.name) {
            state.exclusive = None;
        }
    }
}

impl Hub {
    /// A hub, and the lines to write to stdout (see [`Hub::write_out`]).
    pub fn new() -> (Rc<Self>, UnboundedReceiver<Vec<u8>>) {
        let (out, lines) = unbounded_channel();
        let hub = Self {
            state: RefCell::new(State::default()),
            out,
        };
        (Rc::new(hub), lines)
    }

    /// Attaches the run of certificate `name`: its input and output.
    pub fn attach(
        self: &Rc<Self>,
        name: &str,
        exclusive: bool,
    ) -> (BoxReader, BoxWriter, Attachment) {
        let (tx, rx) = unbounded_channel();
        let mut state = self.state.borrow_mut();
        if !state.closed {
            state.routes.insert(name.to_owned(), tx);
            if exclusive {
                state.exclusive = Some(name.to_owned());
            }
        }
        let reader = ChannelReader {
            lines: rx,
            buf: Vec::new(),
            pos: 0,
        };
        let writer = LineWriter {
            buf: Vec::new(),
            out: self.out.clone(),
        };
        let attachment = Attachment {
            hub: Rc::clone(self),
            name: name.to_owned(),
        };
        (Box::pin(reader), Box::pin(writer), attachment)
    }

    /// Reads `input` to its end, routing each line. Then every run sees end of input.
    pub async fn pump(&self, mut input: impl AsyncBufRead + Unpin) {
        loop {
            let line = match super::json::read_line(&mut input).await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("cannot read stdin: {e}");
                    break;
                }
            };
            self.route(line);
        }
        let mut state = self.state.borrow_mut();
        state.closed = true;
        state.routes.clear();
    }

    fn route(&self, line: Result<Vec<u8>, usize>) {
        let mut state = self.state.borrow_mut();
        state.line_number += 1;
        let n = state.line_number;
        let mut line = match line {
            Ok(line) => line,
            Err(len) => {
                drop(state);
                return self.input_error(
                    format!("input line {n} is {len} bytes long (limit 65536); ignored"),
                    None,
                );
            }
        };
        line.push(b'\n');
        // Before blank lines are skipped: certbot-external-auth's reply is one.
        if let Some(name) = &state.exclusive {
            if let Some(route) = state.routes.get(name) {
                let _ = route.send(line);
            }
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let id = serde_json::from_slice::<serde_json::Value>(&line)
            .map_err(|e| format!("input line {n} is not JSON ({e}); ignored"))
            .and_then(|value| match value.get("id").and_then(|id| id.as_str()) {
                Some(id) => Ok(id.to_owned()),
                None => Err(format!(
                    "input line {n} names no challenge id; with several certificates at once every reply needs the \"id\" of its challenge; ignored"
                )),
            });
        let id = match id {
            Ok(id) => id,
            Err(message) => {
                drop(state);
                return self.input_error(message, None);
            }
        };
        let route = id
            .rsplit_once(ID_SEPARATOR)
            .and_then(|(name, _)| state.routes.get(name));
        match route {
            Some(route) => {
                let _ = route.send(line);
            }
            None => {
                drop(state);
                self.input_error(
                    format!(
                        "input line {n}: no run is waiting for challenge id {id:?} (ids are NAME/cN; that certificate's run has ended or never began); ignored"
                    ),
                    Some(id),
                );
            }
        }
    }

    fn input_error(&self, message: String, id: Option<String>) {
        tracing::warn!("{message}");
        let error = Output::Error(ErrorMessage {
            fatal: false,
            kind: ErrorKind::Input,
            message,
            id,
            name: None,
            problem: None,
        });
        if let Ok(mut line) = serde_json::to_vec(&error) {
            line.push(b'\n');
            let _ = self.out.send(line);
        }
    }

    /// Writes the runs' lines to `out` until every writer (and the hub) is gone.
    pub async fn write_out(
        mut lines: UnboundedReceiver<Vec<u8>>,
        mut out: impl AsyncWrite + Unpin,
    ) {
        while let Some(line) = lines.recv().await {
            if let Err(e) = async {
                out.write_all(&line).await?;
                out.flush().await
            }
            .await
            {
                tracing::error!("cannot write to stdout: {e}");
                // Keep draining so writers never block; the runs end on their own.
                while lines.recv().await.is_some() {}
                return;
            }
        }
    }
}

/// A run's input: the lines routed to it.
struct ChannelReader {
    lines: UnboundedReceiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => available,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for ChannelReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            match this.lines.poll_recv(cx) {
                Poll::Ready(Some(line)) => {
                    this.buf = line;
                    this.pos = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
    }
}

/// A run's output: whole lines, forwarded at each flush.
struct LineWriter {
    buf: Vec<u8>,
    out: UnboundedSender<Vec<u8>>,
}

impl LineWriter {
    fn forward(&mut self, all: bool) -> std::io::Result<()> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            self.send(line)?;
        }
        if all && !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.send(rest)?;
        }
        Ok(())
    }

    fn send(&self, line: Vec<u8>) -> std::io::Result<()> {
        self.out
            .send(line)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdout is closed"))
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().forward(false))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().forward(true))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;

    use super::*;

    async fn next_line(reader: &mut BoxReader) -> Option<String> {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        (n > 0).then_some(line)
    }

    #[tokio::test]
    async fn replies_reach_the_run_their_id_names_and_strays_are_reported() {
        let (hub, mut out) = Hub::new();
        let (mut a, _, _keep_a) = hub.attach("a.test", false);
        let (mut b, mut b_out, _keep_b) = hub.attach("b.test", false);
        let input = concat!(
            "{\"type\":\"ready\",\"id\":\"b.test/c1\"}\n",
            "\n",
            "{\"type\":\"ready\",\"id\":\"a.test/c2\"}\n",
            "{\"type\":\"ready\",\"id\":\"c.test/c1\"}\n",
            "not json\n",
        );
        hub.pump(input.as_bytes()).await;
        assert_eq!(
            next_line(&mut b).await.unwrap(),
            "{\"type\":\"ready\",\"id\":\"b.test/c1\"}\n"
        );
        assert_eq!(next_line(&mut b).await, None, "end of input reaches b");
        assert!(next_line(&mut a).await.unwrap().contains("a.test/c2"));
        assert_eq!(next_line(&mut a).await, None);
        for expected in ["c.test/c1", "not JSON"] {
            let line = String::from_utf8(out.recv().await.unwrap()).unwrap();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value["type"], "error");
            assert_eq!(value["fatal"], false);
            assert!(line.contains(expected), "{line}");
        }
        // A run writes whole lines only, at flush.
        b_out.write_all(b"{\"x\":").await.unwrap();
        b_out.write_all(b"1}\n{\"y\"").await.unwrap();
        b_out.flush().await.unwrap();
        assert_eq!(out.recv().await.unwrap(), b"{\"x\":1}\n");
        assert!(out.try_recv().is_err(), "half a line is held back");
    }

    #[tokio::test]
    async fn an_exclusive_run_gets_every_line_and_late_runs_see_the_end() {
        let (hub, _out) = Hub::new();
        let (mut only, _, keep) = hub.attach("a.test", true);
        hub.pump("anything\n\n{\"id\":\"b.test/c1\"}\n".as_bytes())
            .await;
        assert_eq!(next_line(&mut only).await.unwrap(), "anything\n");
        assert_eq!(
            next_line(&mut only).await.unwrap(),
            "\n",
            "a blank line is a reply"
        );
        assert!(next_line(&mut only).await.unwrap().contains("b.test"));
        assert_eq!(next_line(&mut only).await, None);
        drop(keep);
        let (mut late, _, _keep) = hub.attach("c.test", false);
        assert_eq!(next_line(&mut late).await, None);
    }
}
