//! The one error table: this file alone maps an engine [`ErrorKind`] to an
//! HTTP status and a gRPC code, so the two front ends cannot drift apart.
use axum::http::StatusCode;
pub use quiver_engine::error::{Error, ErrorKind, Result};

/// An engine error as a gRPC status: the code from the table, the message
/// as is.
pub fn status(e: Error) -> tonic::Status {
    tonic::Status::new(e.kind.grpc_code(), e.message)
}

/// The wire codes of an [`ErrorKind`].
pub trait Codes {
    fn http_status(self) -> StatusCode;
    fn grpc_code(self) -> tonic::Code;
}

impl Codes for ErrorKind {
    fn http_status(self) -> StatusCode {
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

    fn grpc_code(self) -> tonic::Code {
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
