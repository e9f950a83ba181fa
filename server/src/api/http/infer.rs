//! `POST /v2/models/{m}[/versions/{v}]/infer`: JSON, the binary tensor data
//! extension, and gzip/deflate in both directions.
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::compression::{self, Coding};
use super::state::{HttpError, HttpState, ModelPath};
use crate::error::{Error, Result};
use quiver_codec::binary::{self, Framing};
use quiver_engine::codec::json::{self, OutputEncoding};
use quiver_engine::tap::{Context, Headers, Protocol};
use quiver_engine::traffic::VARIANT_HEADER;

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Codec work on more than this many bytes (inflating, parsing JSON data,
/// writing JSON numbers, compressing) runs on a blocking thread, so one large
/// request cannot stall the I/O runtime for everyone else.
const INLINE_WORK_BYTES: usize = 256 * 1024;

async fn cpu_bound<T: Send + 'static>(bytes: usize, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    if bytes <= INLINE_WORK_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("a codec task failed: {e}")))?
}

pub async fn infer(State(s): State<HttpState>, Path(p): Path<ModelPath>, headers: HeaderMap, body: Bytes) -> Response {
    match run(&s, p, &headers, body).await {
        Ok(r) => r,
        Err(e) => HttpError(e).into_response(),
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
        Some(coding) => {
            let limit = s.max_body_bytes;
            cpu_bound(body.len(), move || compression::inflate(coding, &body, limit)).await?
        }
    };
    let http = Http(headers);
    let context = Context::new(Protocol::Http, &http);
    // The raw form needs the model's spec to decode: the version routed to
    // for that is the one the request runs on, even if a swap happens between.
    let mut routed = None;
    let (mut req, mut encoding) = match binary::split(body, header_str(headers, HEADER_LENGTH)?)? {
        Framing::Json { header, binary } => {
            let (model, version) = (p.model, p.version);
            // Blobs are sliced, not parsed: only the JSON text counts as work.
            cpu_bound(header.len(), move || {
                let req = json::decode_request(&header, binary, &model, version.as_deref())?;
                let encoding = OutputEncoding::of(&req);
                Ok((req, encoding))
            })
            .await?
        }
        Framing::Raw(raw) => {
            let version = p.version.as_deref();
            let r = s.engine.route(&p.model, version, &context)?;
            let req = binary::raw_request(raw, &r.model.spec, version)?;
            routed = Some(r);
            (req, OutputEncoding::all_binary())
        }
    };
    let routed = match routed {
        Some(r) => r,
        None => s
            .engine
            .route(&req.model_name, req.model_version.as_deref(), &context)?,
    };
    let variant = routed.variant().and_then(|v| HeaderValue::from_str(v).ok());
    let attached = s.shm.attach(&mut req).await?;
    let mut resp = routed.run(req, &context).await?;
    encoding.shared_memory = attached.finish(&mut resp).await?;
    let traced = context
        .trace()
        .and_then(|t| HeaderValue::from_str(&t.traceparent()).ok());
    let sending = Instant::now();
    let accept = compression::accepted_coding(header_str(headers, header::ACCEPT_ENCODING)?);
    let output_bytes: usize = resp.outputs.iter().map(|t| t.data.len()).sum();
    // Binary outputs without compression are one memcpy: not worth a thread hop.
    let work = if accept.is_none() && encoding == OutputEncoding::all_binary() {
        0
    } else {
        output_bytes
    };
    let answer = cpu_bound(work, move || {
        respond(
            json::encode_response(&resp, &encoding)?,
            accept,
            [(VARIANT_HEADER, variant), ("traceparent", traced)],
        )
    })
    .await;
    // A traced request's send events: encoded, handed to hyper.
    context.sent(sending);
    answer
}

/// Request headers as traffic routing reads them.
struct Http<'a>(&'a HeaderMap);

impl Headers for Http<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `extra`: the traffic variant that answered and the request's trace, when there are.
fn respond(
    encoded: json::EncodedResponse,
    accept: Option<Coding>,
    extra: [(&'static str, Option<HeaderValue>); 2],
) -> Result<Response> {
    let mut headers = HeaderMap::new();
    for (name, value) in extra {
        if let Some(v) = value {
            headers.insert(name, v);
        }
    }
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
            compression::deflate(coding, &encoded.body)?
        }
        None => encoded.body,
    };
    Ok((headers, Body::from(body)).into_response())
}
