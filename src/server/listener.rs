//! The server's front door under abuse: every accepted TCP connection must send the HTTP/2
//! client preface within a handshake bound, holds one of a bounded number of connection slots,
//! and is closed after a while with no traffic. Without these, idle connections that never
//! speak pile up until the process runs out of file descriptors and every caller is locked out.
//!
//! A connection over the cap is closed at once (the caller sees a reset, not a hang), and the
//! cap is kept below the process's open-files limit, so accepting can always go on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What every HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// File descriptors kept free beyond the connection cap (Redis, logs, the listener itself).
const FD_RESERVE: u64 = 64;

/// The bounds, from `serve`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake: Duration,
    pub idle: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The cap actually used: at most the open-files limit less a reserve.
    pub fn effective_max_connections(&self) -> usize {
        match open_files_limit() {
            Some(n) => self
                .max_connections
                .min(n.saturating_sub(FD_RESERVE).max(1) as usize),
            None => self.max_connections,
        }
    }
}

/// Accepts on `listener` and yields the connections that completed the preface in time, each
/// holding a slot until it closes.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = Result<Guarded, io::Error>> {
    let (tx, rx) = mpsc::channel::<Guarded>(64);
    let slots = Arc::new(Semaphore::new(limits.effective_max_connections()));
    tokio::spawn(accept_loop(listener, limits, slots, tx));
    futures::stream::unfold(rx, |mut rx| async move {
        let conn = rx.recv().await?;
        Some((Ok(conn), rx))
    })
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Guarded>,
) {
    let mut warned: Option<Instant> = None;
    let mut warn = |what: String| {
        // One line per second at most: a flood must not flood the log too.
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            eprintln!("tk-conform serve: {what}");
            warned = Some(Instant::now());
        }
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; connections wait in the backlog.
                warn(format!("accept failed (will retry): {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            warn(format!(
                "{} connections open (--max-connections): closing the one from {peer}",
                limits.effective_max_connections()
            ));
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake, preface(&stream)).await {
                Ok(Ok(true)) => {
                    let _ = tx.send(Guarded::new(stream, permit, limits.idle)).await;
                }
                // Not HTTP/2, closed, or too slow: the slot goes back.
                _ => drop(stream),
            }
        });
    }
}

/// Waits until the peer has sent the whole client preface (without consuming it).
async fn preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: peek returns at once with the same bytes, so wait a little.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An accepted connection: holds its slot, and reads as closed once it has been idle too long.
pub struct Guarded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    idle_deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, idle: Duration) -> Guarded {
        Guarded {
            stream,
            _slot: slot,
            idle,
            idle_deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        self.idle_deadline
            .as_mut()
            .reset(Instant::now() + self.idle);
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.idle_deadline.as_mut().poll(cx) {
                // Idle too long: end of stream, and the connection closes.
                Poll::Ready(()) => Poll::Ready(Ok(())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The soft `Max open files` limit of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_files_limit() {
        let limit = open_files_limit().expect("Linux has /proc/self/limits");
        let limits = Limits {
            handshake: Duration::from_secs(1),
            idle: Duration::from_secs(1),
            max_connections: usize::MAX,
        };
        assert_eq!(
            limits.effective_max_connections() as u64,
            limit.saturating_sub(FD_RESERVE).max(1)
        );
        let small = Limits {
            max_connections: 3,
            ..limits
        };
        assert_eq!(small.effective_max_connections(), 3);
    }
}
