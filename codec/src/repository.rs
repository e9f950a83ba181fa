//! Triton's model load parameters, from gRPC and from JSON, into the engine's
//! [`LoadParameters`]: `config` (a JSON `ModelConfig`) and `file:<path>` (a model
//! file's bytes: `bytes_param` over gRPC, base64 text over REST). Other
//! load parameters are accepted and ignored. An unload takes
//! `unload_dependents` (a bool): the ensemble's step models go too.
use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use quiver_proto::inference::ModelRepositoryParameter;
use quiver_proto::inference::model_repository_parameter::ParameterChoice;
use serde_json::Value;

use quiver_engine::error::{Error, Result};
use quiver_engine::lifecycle::LoadParameters;

const FILE_PREFIX: &str = "file:";

pub fn load_parameters_from_grpc(parameters: HashMap<String, ModelRepositoryParameter>) -> Result<LoadParameters> {
    let mut request = LoadParameters::default();
    for (key, value) in parameters {
        let value = value.parameter_choice;
        if key == "config" {
            match value {
                Some(ParameterChoice::StringParam(s)) => request.config = Some(s),
                _ => {
                    return Err(Error::invalid(
                        "load parameter 'config' must be a string_param holding JSON",
                    ));
                }
            }
        } else if let Some(path) = key.strip_prefix(FILE_PREFIX) {
            match value {
                Some(ParameterChoice::BytesParam(b)) => request.files.push((path.to_owned(), b)),
                _ => return Err(Error::invalid(format!("load parameter '{key}' must be a bytes_param"))),
            }
        }
    }
    request.files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(request)
}

/// The REST body: `{"parameters": {...}}`, or empty.
pub fn load_parameters_from_json(body: &[u8]) -> Result<LoadParameters> {
    let mut request = LoadParameters::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(request);
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|e| Error::invalid(format!("malformed load request: {e}")))?;
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => return Ok(request),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(Error::invalid("load request 'parameters' must be an object")),
    };
    for (key, value) in parameters {
        if key == "config" {
            let text = value
                .as_str()
                .ok_or_else(|| Error::invalid("load parameter 'config' must be a string holding JSON"))?;
            request.config = Some(text.to_owned());
        } else if let Some(path) = key.strip_prefix(FILE_PREFIX) {
            let text = value
                .as_str()
                .ok_or_else(|| Error::invalid(format!("load parameter '{key}' must be a base64 string")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| Error::invalid(format!("load parameter '{key}' is not base64: {e}")))?;
            request.files.push((path.to_owned(), Bytes::from(bytes)));
        }
    }
    request.files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(request)
}

/// The unload parameter of that name.
const UNLOAD_DEPENDENTS: &str = "unload_dependents";

/// An unload's `unload_dependents` over gRPC (`bool_param`; absent: false).
pub fn unload_dependents_from_grpc(parameters: &HashMap<String, ModelRepositoryParameter>) -> Result<bool> {
    match parameters.get(UNLOAD_DEPENDENTS).map(|p| &p.parameter_choice) {
        None => Ok(false),
        Some(Some(ParameterChoice::BoolParam(b))) => Ok(*b),
        Some(_) => Err(Error::invalid(
            "unload parameter 'unload_dependents' must be a bool_param",
        )),
    }
}

/// An unload's REST body, `{"parameters": {"unload_dependents": true}}` or
/// empty: whether the ensemble's step models go too.
pub fn unload_dependents_from_json(body: &[u8]) -> Result<bool> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|e| Error::invalid(format!("malformed unload request: {e}")))?;
    match body.get("parameters").and_then(|p| p.get(UNLOAD_DEPENDENTS)) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::invalid(
            "unload parameter 'unload_dependents' must be true or false",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unload_dependents_is_read_from_both_protocols() {
        assert!(!unload_dependents_from_json(b"").unwrap());
        assert!(!unload_dependents_from_json(br#"{"parameters": {}}"#).unwrap());
        assert!(unload_dependents_from_json(br#"{"parameters": {"unload_dependents": true}}"#).unwrap());
        let e = unload_dependents_from_json(br#"{"parameters": {"unload_dependents": 1}}"#).unwrap_err();
        assert!(e.message.contains("unload_dependents"), "{}", e.message);
        let p = |c| ModelRepositoryParameter {
            parameter_choice: Some(c),
        };
        let on = HashMap::from([("unload_dependents".to_owned(), p(ParameterChoice::BoolParam(true)))]);
        assert!(unload_dependents_from_grpc(&on).unwrap());
        assert!(!unload_dependents_from_grpc(&HashMap::new()).unwrap());
        let bad = HashMap::from([("unload_dependents".to_owned(), p(ParameterChoice::Int64Param(1)))]);
        assert!(unload_dependents_from_grpc(&bad).is_err());
    }

    #[test]
    fn json_parameters_are_decoded() {
        let r = load_parameters_from_json(
            br#"{"parameters": {"config": "{\"max_batch_size\": 2}", "file:1/model.onnx": "aGk=", "unload_dependents": true}}"#,
        )
        .unwrap();
        assert_eq!(r.config.as_deref(), Some(r#"{"max_batch_size": 2}"#));
        assert_eq!(r.files, vec![("1/model.onnx".to_owned(), Bytes::from_static(b"hi"))]);
        assert!(load_parameters_from_json(b"").unwrap().config.is_none());
        let e = load_parameters_from_json(br#"{"parameters": {"file:1/model.onnx": "***"}}"#).unwrap_err();
        assert!(e.message.contains("file:1/model.onnx"), "{}", e.message);
        let e = load_parameters_from_json(br#"{"parameters": {"config": 3}}"#).unwrap_err();
        assert!(e.message.contains("'config'"), "{}", e.message);
    }

    #[test]
    fn grpc_parameters_are_decoded() {
        let p = |c| ModelRepositoryParameter {
            parameter_choice: Some(c),
        };
        let map = HashMap::from([
            ("config".to_owned(), p(ParameterChoice::StringParam("{}".into()))),
            (
                "file:1/model.onnx".to_owned(),
                p(ParameterChoice::BytesParam(Bytes::from_static(b"x"))),
            ),
        ]);
        let r = load_parameters_from_grpc(map).unwrap();
        assert_eq!(r.config.as_deref(), Some("{}"));
        assert_eq!(r.files.len(), 1);
        let map = HashMap::from([("config".to_owned(), p(ParameterChoice::BoolParam(true)))]);
        assert!(load_parameters_from_grpc(map).is_err());
    }
}
