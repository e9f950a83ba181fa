//! Connections: how many the listeners hold, and how long an idle or slow
//! one may stay. Shared by the HTTP and gRPC listeners, plain and TLS.
//!
//! - A [`Gate`] counts open connections against `--max-connections` (file
//!   descriptors are one budget for both listeners). A connection over it
//!   is refused at once: plain HTTP gets a 503 naming the flag, then close;
//!   gRPC and TLS connections are closed (gRPC clients see UNAVAILABLE and
//!   retry, a balancer moves on). Nothing waits in a backlog.
//! - [`Tracked`] wraps a connection's stream: it holds the gate's permit
//!   until the connection closes and records when bytes last moved, which
//!   the HTTP idle timeout reads.
//!
//! `docs/limits.md` lists every limit with its flag.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::telemetry;

/// The connection budget of the listeners.
pub struct Gate {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl Gate {
    pub fn new(limit: usize) -> Arc<Gate> {
        telemetry::connection_limit(limit);
        Arc::new(Gate {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open now, on both listeners.
    pub fn open(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    /// A slot for one more connection on `listener`, or `None` (counted).
    pub fn admit(&self, listener: &'static str) -> Option<Permit> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => {
                telemetry::connection_opened(listener);
                Some(Permit { _slot: slot, listener })
            }
            Err(_) => {
                telemetry::connection_refused(listener);
                None
            }
        }
    }
}

/// `--max-connections 0`: three quarters of the open-file limit, raised to
/// its hard limit first (as Go's runtime and nginx do), at most 65,536.
pub fn default_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX).clamp(64, 65_536)
}

/// One admitted connection's slot; given back when the connection closes.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    listener: &'static str,
}

impl Drop for Permit {
    fn drop(&mut self) {
        telemetry::connection_closed(self.listener);
    }
}

/// What the idle and header timeouts read: requests in flight, when bytes
/// last moved, and since when an HTTP/1.1 request head has been arriving.
#[derive(Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when bytes last moved.
    last_ms: AtomicU64,
    /// Milliseconds since `epoch` (plus one; 0: none) when the first byte
    /// of a request head arrived that has not become a request yet.
    head_since_ms: AtomicU64,
    /// The connection speaks HTTP/2 (it opened with the preface): its
    /// frames between requests (pings, settings) are not a request head.
    h2: AtomicBool,
    read_any: AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Relaxed);
    }

    /// A request started; it counts until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since_ms.store(0, Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Bytes arrived: the first ones tell HTTP/2 from HTTP/1.1; on HTTP/1.1
    /// with no request in flight they start a request head.
    fn received(&self, data: &[u8]) {
        if !self.read_any.swap(true, Relaxed) && data.starts_with(b"PRI * HTTP/2.0") {
            self.h2.store(true, Relaxed);
        }
        if !self.h2.load(Relaxed) && self.in_flight.load(Relaxed) == 0 && self.head_since_ms.load(Relaxed) == 0 {
            self.head_since_ms.store(self.now_ms() + 1, Relaxed);
        }
        self.touch();
    }

    /// An HTTP/1.1 request head started arriving `timeout` ago and is not
    /// complete yet (slowloris). Unlike hyper's own header timeout, the
    /// clock starts at the head's first byte, so an idle keep-alive
    /// connection is left to the idle timeout.
    pub fn head_overdue(&self, timeout: Duration) -> bool {
        let since = self.head_since_ms.load(Relaxed);
        since != 0
            && self.in_flight.load(Relaxed) == 0
            && (self.now_ms() + 1).saturating_sub(since) >= timeout.as_millis() as u64
    }

    /// No request in flight and no byte moved for `timeout`.
    pub fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Relaxed) == 0
            && self.now_ms().saturating_sub(self.last_ms.load(Relaxed)) >= timeout.as_millis() as u64
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A connection's stream with its slot and its activity.
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
    _permit: Permit,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, permit: Permit) -> Tracked<T> {
        let activity = Arc::new(Activity::default());
        activity.touch();
        Tracked {
            inner,
            activity,
            _permit: permit,
        }
    }

    pub fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Tracked<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The next accepted connection, or `None` once the channel's receiver is
/// gone (the listener's shutdown: the port closes with the loop).
pub async fn next<T>(listener: &TcpListener, tx: &mpsc::Sender<T>) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tx.closed() => return None,
        };
        match accepted {
            Ok(c) => return Some(c),
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts plain TCP connections within the gate's budget. Over it, an
/// HTTP listener answers 503 and closes; another listener just closes.
pub fn accept_tcp(
    listener: TcpListener,
    gate: Arc<Gate>,
    name: &'static str,
    http: bool,
) -> mpsc::Receiver<(Tracked<TcpStream>, std::net::SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((tcp, peer)) = next(&listener, &tx).await {
            // Small answers must leave at once: without TCP_NODELAY, Nagle's
            // algorithm and the client's delayed ACK add up to 40 ms.
            let _ = tcp.set_nodelay(true);
            match gate.admit(name) {
                Some(permit) => {
                    if tx.send((Tracked::new(tcp, permit), peer)).await.is_err() {
                        return;
                    }
                }
                None if http => {
                    tokio::spawn(refuse_http(tcp, gate.limit()));
                }
                None => drop(tcp),
            }
        }
    });
    rx
}

/// The answer to a connection over the limit, written without reading the
/// request (it may never come); the client sees why before the close.
async fn refuse_http(mut tcp: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":\"quiver holds its limit of {limit} connections (--max-connections); try again or another replica\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
