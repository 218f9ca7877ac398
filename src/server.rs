//! The HTTP listener: accepting, per-connection limits and timeouts, graceful drain.
//!
//! `axum::serve` runs hyper without a timer, so a client that connects and never sends a byte
//! holds its socket (and a file descriptor) for ever. This loop serves HTTP/1.1 through hyper
//! directly, with:
//!
//! - a header-read timeout (`[server] header_read_timeout_secs`): hyper starts it whenever a
//!   connection waits for a request head — right after accepting, and again while a keep-alive
//!   connection waits for its next request — so it is also the keep-alive idle timeout, and it
//!   is not reset by a slow-loris client dribbling bytes;
//! - an idle timeout between request-body frames (`request_body_timeout_secs`, a tower layer);
//! - a cap on concurrent connections, in all and per client address; connections beyond it are
//!   closed at once, before any byte is read;
//! - `accept` errors such as EMFILE do not stop the loop: it backs off briefly and logs once a
//!   minute, so the server recovers as soon as descriptors are free again.
//!
//! HTTP/2 is not offered in clear text (clients use HTTP/1.1 over `http://`; a TLS proxy in front
//! can speak HTTP/2 to them). WebSocket upgrades keep the connection's slot until they close.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Listener limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// 0 = no per-address cap (behind a reverse proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
}

/// Open connections, in all and by client address.
#[derive(Debug)]
pub struct ConnectionCounter {
    limits: Limits,
    inner: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnectionCounter {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, inner: Mutex::new((0, HashMap::new())) })
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 >= self.limits.max_connections {
            return None;
        }
        let per_ip = g.1.entry(ip).or_insert(0);
        if self.limits.max_connections_per_ip > 0 && *per_ip >= self.limits.max_connections_per_ip {
            return None;
        }
        *per_ip += 1;
        g.0 += 1;
        Some(ConnectionSlot { counter: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn release(&self, ip: IpAddr) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&ip);
            }
        }
    }
}

/// Held for as long as a connection (or the WebSocket it became) is open.
#[derive(Debug)]
pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counter.release(self.ip);
    }
}

/// A TCP stream that frees its connection slot when dropped. hyper hands the stream to a
/// WebSocket on upgrade, so the slot stays taken for the socket's whole life.
struct CountedStream {
    inner: TcpStream,
    _slot: ConnectionSlot,
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft limit on open files to the hard limit, so the connection caps, not the
/// process limit, decide how many clients are served.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

/// The most a connection reads at once, and so the largest request head. hyper's read buffer grows
/// to fit a large body read (by default up to ~400 KiB) and keeps that capacity for the rest of a
/// keep-alive connection's life: under the soak test every busy connection that had carried an
/// upload held on to it, and RSS grew by tens of MiB. At 16 KiB (Node's default limit for a
/// request head) a connection keeps at most a few tens of KiB; bodies still stream, in 16 KiB reads.
const READ_BUF_MAX: usize = 16 * 1024;

/// True for accept errors that mean "out of a resource, try again shortly".
fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Accepts and serves connections until `shutdown` is cancelled, then stops accepting and lets
/// open connections finish (idle keep-alive connections close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    counter: Arc<ConnectionCounter>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let mut last_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                if is_resource_exhaustion(&e) {
                    // Without a pause the loop would spin on the same error; with it, the server
                    // keeps answering as soon as a descriptor is free again.
                    if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::error!(error = %e, "accepting connections failed; backing off (logged once a minute)");
                        last_warned = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let Some(slot) = counter.try_acquire(peer.ip()) else {
            // Closed before reading anything: a flood of connections costs only the accept.
            tracing::debug!(client.ip = %peer.ip(), "connection refused: connection cap reached");
            drop(stream);
            continue;
        };
        // Small SSE and WebSocket writes must leave at once: without TCP_NODELAY, Nagle's
        // algorithm meets the client's delayed ACK and every event waits ~40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed");
        }
        let io = TokioIo::new(CountedStream { inner: stream, _slot: slot });
        let svc = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.map(Body::new)
        });
        let header_timeout = counter.limits.header_read_timeout;
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .max_buf_size(READ_BUF_MAX);
            let conn = builder.serve_connection(io, TowerToHyperService::new(svc)).with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(client.ip = %peer.ip(), error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address() {
        let c = ConnectionCounter::new(Limits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_ip: 2,
        });
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = c.try_acquire(a);
        let s2 = c.try_acquire(a);
        assert!(s1.is_some() && s2.is_some());
        assert!(c.try_acquire(a).is_none(), "per-address cap");
        let s3 = c.try_acquire(b);
        assert!(s3.is_some());
        assert!(c.try_acquire(b).is_none(), "global cap");
        drop(s1);
        assert_eq!(c.open(), 2);
        assert!(c.try_acquire(a).is_some());
    }
}
