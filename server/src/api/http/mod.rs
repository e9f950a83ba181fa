//! The REST front end (axum on hyper): one module per endpoint group, the
//! routes and their scopes in `routes.rs`, what handlers share in `state.rs`.
mod compression;
mod guard;
mod health;
mod infer;
mod logging;
mod metadata;
mod monitoring;
mod repository;
mod routes;
pub mod serve;
mod shared_memory;
mod state;
mod statistics;
mod trace;
mod traffic;

pub use routes::{admin_router, router};
pub use state::{HttpError, HttpState};
