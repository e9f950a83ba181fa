//! Admission for gRPC: a tower layer in front of every gRPC service takes a
//! request slot before tonic reads anything, and counts the request body's
//! bytes against the server-wide budget as they arrive, so a flood of large
//! messages is refused with RESOURCE_EXHAUSTED before tonic has buffered them.
//! The [`Ticket`] rides in the request's extensions: a handler holds it until
//! it has answered (and a stream gives back each message's bytes once that
//! message is answered).
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::engine::admission::{Admission, Ticket};

#[derive(Clone)]
pub struct AdmissionLayer {
    pub admission: Arc<Admission>,
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admitted<S>;
    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            admission: Arc::clone(&self.admission),
        }
    }
}

#[derive(Clone)]
pub struct Admitted<S> {
    inner: S,
    admission: Arc<Admission>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> Service<axum::http::Request<Body>> for Admitted<S>
where
    S: Service<axum::http::Request<Body>, Response = axum::http::Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<Body>) -> Self::Future {
        let ticket = match self.admission.admit(0) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let refused = Status::from(e).into_http::<Body>();
                return Box::pin(async move { Ok(refused) });
            }
        };
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(Arc::clone(&ticket));
        let body = Body::new(Counted { inner: body, ticket });
        Box::pin(self.inner.call(axum::http::Request::from_parts(parts, body)))
    }
}

/// A request body that takes budget for each frame before passing it on.
struct Counted {
    inner: Body,
    ticket: Arc<Ticket>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
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
