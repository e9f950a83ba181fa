//! The protocol-independent inference request and response: what both front
//! ends decode into and encode from.
use quiver_runtimes::Tensor;

/// A request parameter as the protocol carries it.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
    /// A structured value (an object, an array, null) from a JSON request,
    /// such as MLServer's `headers`: kept as sent, for what reads request
    /// parameters downstream (payload logs, ensemble steps).
    Json(serde_json::Value),
}

impl ParamValue {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParamValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParamValue::Int(i) => Some(*i),
            ParamValue::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }
}

/// Named parameters, in the order they arrived (a handful at most).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters(pub Vec<(String, ParamValue)>);

impl Parameters {
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An output the client asked for, with how it wants it encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// Binary tensor data extension: `Some(true)` sends this output as a blob.
    pub binary_data: Option<bool>,
    /// Classification extension: the top k of this output, as sent
    /// (validation checks it is a positive integer).
    pub classification: Option<ParamValue>,
}

#[derive(Clone, Debug, Default)]
pub struct InferRequest {
    pub model_name: String,
    /// `None`: the version routing picks (the highest ready version).
    pub model_version: Option<String>,
    pub id: String,
    pub parameters: Parameters,
    pub inputs: Vec<Tensor>,
    /// Empty: every output of the model, in the model's order.
    pub outputs: Vec<RequestedOutput>,
}

#[derive(Clone, Debug)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: String,
    pub outputs: Vec<Tensor>,
}
