//! Serves the HTTP router on the connections the listener admitted, with
//! hyper directly rather than `axum::serve`, for the limits that one does
//! not expose: a deadline on an HTTP/1.1 request's headers from their first
//! byte (slowloris), an idle timeout (no request in flight and no byte
//! moving), and the streams one HTTP/2 connection may open. On shutdown every connection is closed
//! gracefully: requests in flight finish, idle keep-alive connections end.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tower::Service;

use crate::connections::Tracked;

/// The per-connection limits of the HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
}

/// Serves until `stop`, then closes every connection gracefully and
/// returns once they have all ended.
pub async fn serve<IO>(
    mut incoming: mpsc::Receiver<(Tracked<IO>, SocketAddr)>,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            next = incoming.recv() => match next {
                Some((io, _peer)) => {
                    connections.spawn(connection(io, app.clone(), limits, closing_rx.clone()));
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // The accept loop ends with the channel: the port closes now.
    drop(incoming);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

async fn connection<IO>(io: Tracked<IO>, app: Router, limits: HttpLimits, mut closing: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = io.activity();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            // In flight from the request's head to its answer's head; the
            // body's bytes moving count as activity on their own.
            let in_flight = activity.begin();
            let mut app = app.clone();
            async move {
                let answer = app.call(request).await;
                drop(in_flight);
                Ok::<_, Infallible>(answer.unwrap_or_else(|e| match e {}))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timeout also runs while a keep-alive connection waits
    // for its next request, which would close idle connections at the
    // header timeout instead of the idle one (and race load balancers that
    // reuse them): quiver's own check (`Activity::head_overdue`) starts at a
    // head's first byte instead.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout.min(limits.header_read_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut closed = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = closing.wait_for(|c| *c), if !closed => {
                conn.as_mut().graceful_shutdown();
                closed = true;
            }
            _ = tokio::time::sleep(tick) => {
                // A head that never ends is cut off: no request to finish.
                if activity.head_overdue(limits.header_read_timeout) {
                    break;
                }
                if !closed && activity.idle_for(limits.idle_timeout) {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                }
            }
        }
    }
}
