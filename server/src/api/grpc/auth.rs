//! The token check for gRPC: a tower layer in front of every gRPC service
//! (inference, health, reflection) that checks the `authorization` /
//! `x-api-key` metadata against the scope of the method called.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response, header};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::{Auth, grpc_scope};

#[derive(Clone)]
pub struct AuthLayer {
    pub auth: Arc<Auth>,
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authorized<S>;
    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    auth: Arc<Auth>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Authorized<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let headers = request.headers();
        let checked = self.auth.check(
            grpc_scope(request.uri().path()),
            headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
            headers.get("x-api-key").map(|v| v.as_bytes()),
        );
        if let Err(e) = checked {
            let refused = Status::from(e).into_http::<Body>();
            return Box::pin(async move { Ok(refused) });
        }
        Box::pin(self.inner.call(request))
    }
}
