//! The V2 JSON tensor codec (request and answer bodies ↔ engine tensors),
//! pure data with no HTTP types: the REST front end uses it for every
//! request and the validation gate for its golden cases.
pub mod elements;
pub mod json;
