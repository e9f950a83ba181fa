//! Following an MLflow Model Registry: `--registry-model fraud=models:/fraud-detection@champion`.
//!
//! Every poll interval the follower resolves the reference through MLflow's
//! REST API (an alias, a stage, `latest`, or a fixed version). When it names
//! another version than the one serving, that version's artifact is
//! downloaded once into the cache (through MLflow's artifact proxy, from the
//! object store behind it, or from a local path the server shares), laid
//! out as `<model>/<registry version>/`, and loaded through the engine's
//! lifecycle: warm up, validation gate, switch, drain. A rollback (the alias
//! moving back) is the same swap, served from the cache. A registry that
//! cannot be reached leaves what serves serving; the follower reports the
//! error and retries with back-off.
pub mod client;
pub mod follower;
pub mod mlmodel;
pub mod reference;

pub use client::Client;
pub use follower::Follower;
pub use reference::{Follow, Reference, Selector};
