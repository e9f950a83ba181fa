//! Every failure a client can see has an [`ErrorKind`] and a message that
//! names what was wrong. Which HTTP status and gRPC code a kind answers is
//! the front ends' business: the one table is `quiver_server::error`.

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
