//! Triton's trace extension over REST: `GET /v2[/models/{m}]/trace/setting`
//! answers the settings in force (a model without its own, the global
//! ones); `POST` changes the settings its JSON object names (a string, an
//! array of strings for `trace_level`, `null` to clear) and answers them
//! all (`crate::trace::settings`).
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Map, Value as JsonValue};

use super::state::{HttpError, HttpState};
use crate::error::Error;
use crate::trace::settings::Change;

fn to_json(s: &HttpState, model: Option<&str>) -> Json<JsonValue> {
    let object: Map<String, JsonValue> = s
        .tracer
        .settings
        .report(model)
        .into_iter()
        .map(|(name, mut values)| {
            let value = if name == "trace_level" {
                JsonValue::from(values)
            } else {
                JsonValue::from(values.pop().unwrap_or_default())
            };
            (name.to_owned(), value)
        })
        .collect();
    Json(JsonValue::Object(object))
}

fn change(name: String, value: JsonValue) -> Result<Change, Error> {
    let values = match value {
        JsonValue::Null => None,
        JsonValue::String(s) => Some(vec![s]),
        // Numbers as Triton's clients sometimes send them.
        JsonValue::Number(n) => Some(vec![n.to_string()]),
        JsonValue::Array(items) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    JsonValue::String(s) => Ok(s),
                    other => Err(Error::invalid(format!(
                        "trace setting '{name}': expected strings, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(Error::invalid(format!(
                "trace setting '{name}': expected a string, an array of strings or null, got {other}"
            )));
        }
    };
    Ok((name, values))
}

async fn update(s: &HttpState, model: Option<&str>, body: &[u8]) -> Result<Json<JsonValue>, HttpError> {
    let object: Map<String, JsonValue> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::invalid(format!("trace settings: expected a JSON object of settings: {e}")))?
    };
    let changes = object
        .into_iter()
        .map(|(name, value)| change(name, value))
        .collect::<Result<Vec<_>, Error>>()?;
    if !changes.is_empty() {
        s.tracer.settings.update(model, &changes).map_err(Error::invalid)?;
    }
    Ok(to_json(s, model))
}

pub async fn get(State(s): State<HttpState>) -> Json<JsonValue> {
    to_json(&s, None)
}

pub async fn post(State(s): State<HttpState>, body: Bytes) -> Result<Json<JsonValue>, HttpError> {
    update(&s, None, &body).await
}

pub async fn get_model(State(s): State<HttpState>, Path(model): Path<String>) -> Json<JsonValue> {
    to_json(&s, Some(&model))
}

pub async fn post_model(
    State(s): State<HttpState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<JsonValue>, HttpError> {
    update(&s, Some(&model), &body).await
}
