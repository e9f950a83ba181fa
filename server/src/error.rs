//! The one error table: every failure a client can see has an [`ErrorKind`],
//! and this file alone maps a kind to an HTTP status and a gRPC code, so the two
//! front ends cannot drift apart.
use axum::http::StatusCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request: bad JSON, shape/data mismatch, wrong datatype, unknown input.
    InvalidArgument,
    /// Unknown model or version.
    NotFound,
    /// Model not ready, server shutting down.
    Unavailable,
    /// Queue full: rejected at once instead of queueing without bound.
    ResourceExhausted,
    /// A request body over the configured limit.
    PayloadTooLarge,
    /// The request's queue timeout passed before it ran.
    DeadlineExceeded,
    /// A protocol feature quiver does not implement.
    Unimplemented,
    /// Allowed by the protocol, not by how this server was started (model
    /// load/unload outside explicit model control mode).
    NotAllowed,
    /// The runtime failed while executing.
    Internal,
    /// No token, or a token the server does not know.
    Unauthenticated,
    /// A valid token without the scope the call needs.
    PermissionDenied,
}

impl ErrorKind {
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            // Triton answers 503 here; 429 is what load balancers and clients
            // treat as "back off and retry", which users asked for.
            ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::NotAllowed => StatusCode::CONFLICT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
            // gRPC's own answer to a message over the limit.
            ErrorKind::PayloadTooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorKind::Unimplemented => tonic::Code::Unimplemented,
            ErrorKind::NotAllowed => tonic::Code::FailedPrecondition,
            ErrorKind::Internal => tonic::Code::Internal,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        }
    }
}

/// A failure with a message meant for the client: it names the input, model or
/// parameter at fault and what was wrong with it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }
    /// A request or answer over a size limit (413 / RESOURCE_EXHAUSTED).
    pub fn too_large(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::PayloadTooLarge, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }
}

impl From<quiver_runtimes::RuntimeError> for Error {
    fn from(e: quiver_runtimes::RuntimeError) -> Self {
        use quiver_runtimes::RuntimeError as R;
        match e {
            R::InvalidInput(m) => Error::invalid(m),
            R::Load(m) => Error::unavailable(m),
            R::Execution(m) | R::Interface(m) => Error::internal(m),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_protocol() {
        let rows = [
            (ErrorKind::InvalidArgument, 400, tonic::Code::InvalidArgument),
            (ErrorKind::NotFound, 404, tonic::Code::NotFound),
            (ErrorKind::Unavailable, 503, tonic::Code::Unavailable),
            (ErrorKind::ResourceExhausted, 429, tonic::Code::ResourceExhausted),
            (ErrorKind::PayloadTooLarge, 413, tonic::Code::ResourceExhausted),
            (ErrorKind::DeadlineExceeded, 504, tonic::Code::DeadlineExceeded),
            (ErrorKind::Unimplemented, 501, tonic::Code::Unimplemented),
            (ErrorKind::NotAllowed, 409, tonic::Code::FailedPrecondition),
            (ErrorKind::Internal, 500, tonic::Code::Internal),
            (ErrorKind::Unauthenticated, 401, tonic::Code::Unauthenticated),
            (ErrorKind::PermissionDenied, 403, tonic::Code::PermissionDenied),
        ];
        for (kind, http, grpc) in rows {
            assert_eq!(kind.http_status().as_u16(), http, "{kind:?}");
            assert_eq!(kind.grpc_code(), grpc, "{kind:?}");
        }
    }
}
