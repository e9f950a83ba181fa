//! `Content-Encoding` / `Accept-Encoding` for inference bodies: gzip and
//! deflate (zlib-wrapped, as HTTP and tritonclient mean it), both ways.
use std::io::{Read, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// The request's `Content-Encoding`; `None` for identity.
pub fn content_coding(value: Option<&str>) -> Result<Option<Coding>> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v.is_empty() || v == "identity" => Ok(None),
        Some(v) if v == "gzip" || v == "x-gzip" => Ok(Some(Coding::Gzip)),
        Some(v) if v == "deflate" => Ok(Some(Coding::Deflate)),
        Some(v) => Err(Error::invalid(format!(
            "Content-Encoding '{v}' is not supported (use gzip or deflate)"
        ))),
    }
}

/// The coding to answer with, from `Accept-Encoding` (gzip preferred).
pub fn accepted_coding(value: Option<&str>) -> Option<Coding> {
    let value = value?.to_ascii_lowercase();
    let offered = |name: &str| {
        value.split(',').any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let q_zero = it.any(|p| p.trim().replace(' ', "") == "q=0");
            coding == name && !q_zero
        })
    };
    if offered("gzip") {
        Some(Coding::Gzip)
    } else if offered("deflate") {
        Some(Coding::Deflate)
    } else {
        None
    }
}

/// Inflates a request body, refusing to grow past `limit` bytes.
pub fn inflate(coding: Coding, body: &[u8], limit: usize) -> Result<Bytes> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let reader: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(GzDecoder::new(body)),
        Coding::Deflate => Box::new(ZlibDecoder::new(body)),
    };
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::invalid(format!("request body is not valid {}: {e}", coding.name())))?;
    if out.len() > limit {
        return Err(Error::invalid(format!(
            "request body inflates past the {limit}-byte limit (--http-max-body-bytes)"
        )));
    }
    Ok(out.into())
}

/// Compresses a response body. A fast level: the point is the wire, not the ratio.
pub fn deflate(coding: Coding, body: &[u8]) -> Result<Vec<u8>> {
    let out = Vec::with_capacity(body.len() / 2 + 64);
    let result = match coding {
        Coding::Gzip => {
            let mut e = GzEncoder::new(out, Compression::fast());
            e.write_all(body).and_then(|_| e.finish())
        }
        Coding::Deflate => {
            let mut e = ZlibEncoder::new(out, Compression::fast());
            e.write_all(body).and_then(|_| e.finish())
        }
    };
    // Writing into a Vec does not fail, but an encoder error must never
    // become an empty 200.
    result.map_err(|e| Error::internal(format!("cannot compress the answer with {}: {e}", coding.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let body = vec![7u8; 10_000];
        for c in [Coding::Gzip, Coding::Deflate] {
            let packed = deflate(c, &body).unwrap();
            assert!(packed.len() < body.len());
            assert_eq!(inflate(c, &packed, 10_000).unwrap().as_ref(), body.as_slice());
            assert!(
                inflate(c, &packed, 9_999)
                    .unwrap_err()
                    .message
                    .contains("9999-byte limit")
            );
        }
        assert!(
            inflate(Coding::Gzip, b"not gzip", 100)
                .unwrap_err()
                .message
                .contains("not valid gzip")
        );
    }

    #[test]
    fn negotiates_codings() {
        assert_eq!(accepted_coding(Some("gzip, deflate")), Some(Coding::Gzip));
        assert_eq!(accepted_coding(Some("deflate")), Some(Coding::Deflate));
        assert_eq!(accepted_coding(Some("gzip;q=0, deflate")), Some(Coding::Deflate));
        assert_eq!(accepted_coding(Some("br")), None);
        assert_eq!(content_coding(Some("identity")).unwrap(), None);
        assert!(content_coding(Some("br")).is_err());
    }
}
