//! Triton's shared memory extensions over REST:
//! `/v2/systemsharedmemory[/region/{name}]/{status,register,unregister}` and
//! the same under `/v2/cudasharedmemory`, which a build without CUDA answers
//! with a clear error (`crate::shm`).
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::state::{HttpError, HttpState};
use crate::error::Error;
use crate::shm::RegionStatus;

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

/// No CUDA region can exist here: the list is empty.
pub async fn cuda_status() -> Json<Vec<RegionStatus>> {
    Json(Vec::new())
}

pub async fn cuda_register() -> Result<Json<()>, HttpError> {
    Err(crate::shm::cuda_unavailable().into())
}

pub async fn cuda_unregister() -> Json<()> {
    Json(())
}
