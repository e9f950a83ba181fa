//! What every gRPC call passes before tonic reads its message, in one tower
//! layer in front of every gRPC service (inference, health, reflection):
//! 1. the token check: `authorization` / `x-api-key` metadata against the
//!    scope of the method called (`crate::auth`);
//! 2. admission: a request slot, then the body's bytes counted against the
//!    server-wide budget as frames arrive, so a flood of large messages is
//!    refused with RESOURCE_EXHAUSTED before tonic has buffered them;
//! 3. the message limit (`--grpc-max-message-bytes`), read from each gRPC
//!    message's length prefix as it arrives: over it is RESOURCE_EXHAUSTED,
//!    gRPC's code for it (and Triton's), where tonic's own check would answer
//!    OUT_OF_RANGE. tonic's check stays behind this one.
//!
//! The admission [`Ticket`] rides in the request's extensions: a handler
//! holds it until it has answered (and a stream gives back each message's
//! bytes once that message is answered).
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response, header};
use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::Auth;
use crate::error::Result;
use quiver_engine::admission::{Admission, Ticket};

#[derive(Clone)]
pub struct GuardLayer {
    pub auth: Arc<Auth>,
    pub admission: Arc<Admission>,
    /// The largest message a client may send, in bytes.
    pub max_message_bytes: usize,
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: GuardLayer,
}

impl GuardLayer {
    fn admit(&self, request: &Request<Body>) -> Result<Arc<Ticket>> {
        // Without tokens every call is allowed: not even the scope is looked up.
        if self.auth.enabled() {
            let headers = request.headers();
            self.auth.check(
                super::scope(request.uri().path()),
                headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
                headers.get("x-api-key").map(|v| v.as_bytes()),
            )?;
        }
        Ok(Arc::new(self.admission.admit(0)?))
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Guarded<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ticket = match self.guard.admit(&request) {
            Ok(t) => t,
            Err(e) => {
                let refused = crate::error::status(e).into_http::<Body>();
                return Box::pin(async move { Ok(refused) });
            }
        };
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(Arc::clone(&ticket));
        let body = Body::new(Counted {
            inner: body,
            ticket,
            frames: Frames::new(self.guard.max_message_bytes),
        });
        Box::pin(self.inner.call(Request::from_parts(parts, body)))
    }
}

/// A request body that takes budget for each frame before passing it on.
struct Counted {
    inner: Body,
    ticket: Arc<Ticket>,
    frames: Frames,
}

/// Follows the gRPC message framing (a flag byte and a 4-byte big-endian
/// length before each message) across body chunks, to refuse a message
/// over the limit from its prefix, before its bytes are buffered.
struct Frames {
    limit: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    prefix: [u8; 5],
    prefix_len: usize,
}

impl Frames {
    fn new(limit: usize) -> Self {
        Frames {
            limit,
            remaining: 0,
            prefix: [0; 5],
            prefix_len: 0,
        }
    }

    /// Reads one chunk; the error names the message's size and the limit.
    fn read(&mut self, mut chunk: &[u8]) -> std::result::Result<(), Status> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.len());
                self.remaining -= n;
                chunk = &chunk[n..];
                continue;
            }
            let n = (5 - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[..n]);
            self.prefix_len += n;
            chunk = &chunk[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
                if len > self.limit {
                    return Err(crate::error::status(crate::error::Error::too_large(format!(
                        "gRPC message of {len} bytes is over the limit of {} bytes (--grpc-max-message-bytes)",
                        self.limit
                    ))));
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Status>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if let Some(data) = frame.data_ref()
                    && let Err(status) = self.frames.read(data)
                {
                    return Poll::Ready(Some(Err(status)));
                }
                match self.ticket.grow(n) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(e) => Poll::Ready(Some(Err(crate::error::status(e)))),
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn messages_over_the_limit_are_refused_from_their_prefix_in_any_chunking() {
        let mut stream = message(10);
        stream.extend(message(100));
        stream.extend(message(3));
        for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut ok = Frames::new(100);
            for c in stream.chunks(chunk) {
                ok.read(c).unwrap();
            }
            let mut tight = Frames::new(99);
            let e = stream.chunks(chunk).find_map(|c| tight.read(c).err()).unwrap();
            assert_eq!(e.code(), tonic::Code::ResourceExhausted);
            assert!(
                e.message().contains("100 bytes") && e.message().contains("limit of 99"),
                "{e}"
            );
        }
        // Only the prefix is needed: a huge announced length fails at once.
        let mut f = Frames::new(1 << 20);
        assert!(f.read(&[0, 0x40, 0, 0, 0]).is_err());
    }
}
