//! `POST /v2/models/{m}[/versions/{v}]/infer`: JSON, the binary tensor data
//! extension, and gzip/deflate in both directions.
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::compression::{self, Coding};
use super::{HttpState, ModelPath};
use crate::api::codec::binary::{self, Framing};
use crate::api::codec::json::{self, OutputEncoding};
use crate::error::{Error, Result};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Bodies above this size are inflated on a blocking thread, not on the I/O runtime.
const INLINE_INFLATE_BYTES: usize = 256 * 1024;

pub async fn infer(State(s): State<HttpState>, Path(p): Path<ModelPath>, headers: HeaderMap, body: Bytes) -> Response {
    match run(&s, p, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Result<Option<&str>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::invalid("a request header is not valid ASCII"))
        })
        .transpose()
}

async fn run(s: &HttpState, p: ModelPath, headers: &HeaderMap, body: Bytes) -> Result<Response> {
    let body = match compression::content_coding(header_str(headers, header::CONTENT_ENCODING)?)? {
        None => body,
        Some(coding) if body.len() <= INLINE_INFLATE_BYTES => compression::inflate(coding, &body, s.max_body_bytes)?,
        Some(coding) => {
            let limit = s.max_body_bytes;
            tokio::task::spawn_blocking(move || compression::inflate(coding, &body, limit))
                .await
                .map_err(|e| Error::internal(format!("inflating the body failed: {e}")))??
        }
    };
    let version = p.version.as_deref();
    let (req, encoding) = match binary::split(body, header_str(headers, HEADER_LENGTH)?)? {
        Framing::Json { header, binary } => {
            let req = json::decode_request(&header, binary, &p.model, version)?;
            let encoding = OutputEncoding::of(&req);
            (req, encoding)
        }
        Framing::Raw(raw) => {
            let model = s.engine.registry().resolve(&p.model, version)?;
            (
                binary::raw_request(raw, &model.spec, version)?,
                OutputEncoding::all_binary(),
            )
        }
    };
    let resp = s.engine.infer(req).await?;
    let encoded = json::encode_response(&resp, &encoding);
    let accept = compression::accepted_coding(header_str(headers, header::ACCEPT_ENCODING)?);
    Ok(respond(encoded, accept))
}

fn respond(encoded: json::EncodedResponse, accept: Option<Coding>) -> Response {
    let mut headers = HeaderMap::new();
    match encoded.header_len {
        Some(n) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    let body = match accept {
        Some(coding) => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
            compression::deflate(coding, &encoded.body)
        }
        None => encoded.body,
    };
    (headers, Body::from(body)).into_response()
}
