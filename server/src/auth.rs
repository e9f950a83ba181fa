//! Bearer-token / API-key auth with two scopes.
//!
//! - **data plane**: inference, metadata, config, statistics, the repository
//!   index, gRPC reflection;
//! - **control plane**: model load and unload (and, later, traffic policy).
//!   A control token may do everything a data token may.
//!
//! Health and metrics stay open unless `--auth-health` asks otherwise, so
//! Kubernetes probes and Prometheus keep working without a secret.
//!
//! Which scope an endpoint needs is declared beside it: the REST endpoint
//! tables in `api/http/mod.rs`, the gRPC methods in `api/grpc/mod.rs`.
//!
//! A client sends `Authorization: Bearer <token>` or `X-API-Key: <token>`
//! (HTTP headers or gRPC metadata). Tokens are compared in constant time.
//! A missing or unknown token is 401 / UNAUTHENTICATED; a data token on the
//! control plane is 403 / PERMISSION_DENIED.
use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Health and metrics.
    Open,
    Data,
    Control,
}

#[derive(Clone, Debug, Default)]
pub struct Auth {
    data: Vec<Vec<u8>>,
    control: Vec<Vec<u8>>,
    protect_health: bool,
}

/// Equal without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Auth {
    pub fn new(data: &[String], control: &[String], protect_health: bool) -> Auth {
        let bytes = |v: &[String]| {
            v.iter()
                .filter(|t| !t.is_empty())
                .map(|t| t.as_bytes().to_vec())
                .collect()
        };
        Auth {
            data: bytes(data),
            control: bytes(control),
            protect_health,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.data.is_empty() || !self.control.is_empty()
    }

    /// What `token` may do: every configured token is compared, whichever matches.
    fn granted(&self, token: &[u8]) -> Option<Scope> {
        let control = self.control.iter().fold(false, |m, t| m | constant_time_eq(t, token));
        let data = self.data.iter().fold(false, |m, t| m | constant_time_eq(t, token));
        if control {
            Some(Scope::Control)
        } else if data {
            Some(Scope::Data)
        } else {
            None
        }
    }

    /// Checks a call needing `scope` with the credential headers it carried:
    /// `authorization` and `x-api-key` values.
    pub fn check(&self, scope: Scope, authorization: Option<&[u8]>, api_key: Option<&[u8]>) -> Result<()> {
        if !self.enabled() || (scope == Scope::Open && !self.protect_health) {
            return Ok(());
        }
        let bearer = authorization.and_then(|v| {
            let (kind, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
            kind.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
        });
        let Some(token) = bearer.or(api_key.map(<[u8]>::trim_ascii)) else {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                "this endpoint needs a token: send 'Authorization: Bearer <token>' or 'X-API-Key: <token>'",
            ));
        };
        match self.granted(token) {
            None => Err(Error::new(ErrorKind::Unauthenticated, "the token is not valid")),
            Some(granted) if granted < scope => Err(Error::new(
                ErrorKind::PermissionDenied,
                "this token is for the data plane; loading and unloading models needs a control-plane token",
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_tokens() {
        let auth = Auth::new(&["d1".into(), "d2".into()], &["c".into()], false);
        let kind = |r: Result<()>| r.err().map(|e| e.kind);
        assert_eq!(kind(auth.check(Scope::Data, Some(b"Bearer d2"), None)), None);
        assert_eq!(kind(auth.check(Scope::Data, None, Some(b"d1"))), None);
        assert_eq!(
            kind(auth.check(Scope::Data, Some(b"bearer c"), None)),
            None,
            "control covers data"
        );
        assert_eq!(kind(auth.check(Scope::Control, Some(b"Bearer c"), None)), None);
        assert_eq!(
            kind(auth.check(Scope::Control, Some(b"Bearer d1"), None)),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            kind(auth.check(Scope::Data, None, None)),
            Some(ErrorKind::Unauthenticated)
        );
        assert_eq!(
            kind(auth.check(Scope::Data, Some(b"Bearer d3"), None)),
            Some(ErrorKind::Unauthenticated)
        );
        assert_eq!(
            kind(auth.check(Scope::Data, Some(b"Basic d1"), None)),
            Some(ErrorKind::Unauthenticated)
        );
        assert_eq!(kind(auth.check(Scope::Open, None, None)), None);
        let strict = Auth::new(&["d".into()], &[], true);
        assert_eq!(
            kind(strict.check(Scope::Open, None, None)),
            Some(ErrorKind::Unauthenticated)
        );
        assert_eq!(
            kind(Auth::default().check(Scope::Control, None, None)),
            None,
            "no tokens: open"
        );
    }
}
