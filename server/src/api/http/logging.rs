//! Triton's logging extension over REST: `GET /v2/logging` answers the log
//! settings in force, `POST /v2/logging` changes the ones its JSON object
//! names and answers them all (`crate::logging`).
use axum::Json;
use axum::body::Bytes;
use serde_json::{Map, Value as JsonValue};

use super::state::HttpError;
use crate::error::Error;
use crate::logging::{self, Value};

fn to_json(settings: &logging::Settings) -> Json<JsonValue> {
    let object: Map<String, JsonValue> = settings
        .fields()
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Bool(b) => JsonValue::from(b),
                Value::Number(n) => JsonValue::from(n),
                Value::Text(t) => JsonValue::from(t),
            };
            (name.to_owned(), value)
        })
        .collect();
    Json(JsonValue::Object(object))
}

pub async fn get() -> Json<JsonValue> {
    to_json(&logging::settings())
}

pub async fn post(body: Bytes) -> Result<Json<JsonValue>, HttpError> {
    let object: Map<String, JsonValue> = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("log settings: expected a JSON object of settings: {e}")))?;
    let changes = object
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                JsonValue::Bool(b) => Value::Bool(b),
                JsonValue::String(s) => Value::Text(s),
                JsonValue::Number(n) => match n.as_u64() {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(Error::invalid(format!(
                            "log setting '{name}': expected an unsigned integer, got {n}"
                        )));
                    }
                },
                other => {
                    return Err(Error::invalid(format!(
                        "log setting '{name}': expected a boolean, a number or a string, got {other}"
                    )));
                }
            };
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(to_json(&logging::update(&changes)?))
}
