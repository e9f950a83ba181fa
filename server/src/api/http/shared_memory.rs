//! Triton's shared memory extensions over REST:
//! `/v2/systemsharedmemory[/region/{name}]/{status,register,unregister}` and
//! the same under `/v2/cudasharedmemory` for CUDA regions (`crate::shm`).
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::state::{HttpError, HttpState};
use crate::error::Error;
use crate::shm::{CudaRegionStatus, RegionStatus};

#[derive(Deserialize)]
pub struct Region {
    name: String,
}

#[derive(Deserialize)]
struct Register {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

pub async fn status_all(State(s): State<HttpState>) -> Result<Json<Vec<RegionStatus>>, HttpError> {
    Ok(Json(s.shm.status(None)?))
}

pub async fn status(State(s): State<HttpState>, Path(r): Path<Region>) -> Result<Json<Vec<RegionStatus>>, HttpError> {
    Ok(Json(s.shm.status(Some(&r.name))?))
}

pub async fn register(State(s): State<HttpState>, Path(r): Path<Region>, body: Bytes) -> Result<Json<()>, HttpError> {
    let req: Register = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!(
            "register shared memory region '{}': expected {{\"key\", \"offset\", \"byte_size\"}}: {e}",
            r.name
        ))
    })?;
    s.shm.register(&r.name, &req.key, req.offset, req.byte_size)?;
    Ok(Json(()))
}

pub async fn unregister_all(State(s): State<HttpState>) -> Json<()> {
    s.shm.unregister(None);
    Json(())
}

pub async fn unregister(State(s): State<HttpState>, Path(r): Path<Region>) -> Json<()> {
    s.shm.unregister(Some(&r.name));
    Json(())
}

pub async fn cuda_status_all(State(s): State<HttpState>) -> Result<Json<Vec<CudaRegionStatus>>, HttpError> {
    Ok(Json(s.shm.cuda_status(None)?))
}

pub async fn cuda_status(
    State(s): State<HttpState>,
    Path(r): Path<Region>,
) -> Result<Json<Vec<CudaRegionStatus>>, HttpError> {
    Ok(Json(s.shm.cuda_status(Some(&r.name))?))
}

/// Triton's body: `{"raw_handle": {"b64": <the handle's 64 bytes in
/// base64>}, "device_id", "byte_size"}`.
#[derive(Deserialize)]
struct RegisterCuda {
    raw_handle: RawHandle,
    #[serde(default)]
    device_id: i64,
    byte_size: u64,
}

#[derive(Deserialize)]
struct RawHandle {
    b64: String,
}

pub async fn cuda_register(
    State(s): State<HttpState>,
    Path(r): Path<Region>,
    body: Bytes,
) -> Result<Json<()>, HttpError> {
    use base64::Engine as _;
    let req: RegisterCuda = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!(
            "register CUDA shared memory region '{}': expected {{\"raw_handle\": {{\"b64\"}}, \"device_id\", \"byte_size\"}}: {e}",
            r.name
        ))
    })?;
    let handle = base64::engine::general_purpose::STANDARD
        .decode(req.raw_handle.b64.as_bytes())
        .map_err(|e| {
            Error::invalid(format!(
                "register CUDA shared memory region '{}': raw_handle.b64 is not base64: {e}",
                r.name
            ))
        })?;
    s.shm
        .register_cuda(&r.name, handle, req.device_id, req.byte_size)
        .await?;
    Ok(Json(()))
}

pub async fn cuda_unregister_all(State(s): State<HttpState>) -> Json<()> {
    s.shm.unregister_cuda(None);
    Json(())
}

pub async fn cuda_unregister(State(s): State<HttpState>, Path(r): Path<Region>) -> Json<()> {
    s.shm.unregister_cuda(Some(&r.name));
    Json(())
}
