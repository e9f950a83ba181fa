//! What every gRPC call passes before tonic reads its message, in one tower
//! layer in front of every gRPC service (inference, health, reflection):
//! 1. the token check: `authorization` / `x-api-key` metadata against the
//!    scope of the method called (`crate::auth`);
//! 2. admission: a request slot, then the body's bytes counted against the
//!    server-wide budget as frames arrive, so a flood of large messages is
//!    refused with RESOURCE_EXHAUSTED before tonic has buffered them.
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

use crate::auth::{Auth, grpc_scope};
use crate::engine::admission::{Admission, Ticket};
use crate::error::Result;

#[derive(Clone)]
pub struct GuardLayer {
    pub auth: Arc<Auth>,
    pub admission: Arc<Admission>,
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
        let headers = request.headers();
        self.auth.check(
            grpc_scope(request.uri().path()),
            headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
            headers.get("x-api-key").map(|v| v.as_bytes()),
        )?;
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
                let refused = Status::from(e).into_http::<Body>();
                return Box::pin(async move { Ok(refused) });
            }
        };
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(Arc::clone(&ticket));
        let body = Body::new(Counted { inner: body, ticket });
        Box::pin(self.inner.call(Request::from_parts(parts, body)))
    }
}

/// A request body that takes budget for each frame before passing it on.
struct Counted {
    inner: Body,
    ticket: Arc<Ticket>,
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
                match self.ticket.grow(n) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(e) => Poll::Ready(Some(Err(Status::from(e)))),
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
