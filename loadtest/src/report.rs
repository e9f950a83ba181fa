//! One row per measurement, written as JSON and as a Markdown table.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::run::Measured;

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub model: String,
    /// grpc, http-binary, http-json, or in-process.
    pub protocol: String,
    /// "closed" (concurrency) or "open" (rate).
    pub mode: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    /// Rows per request (in-process: per run).
    pub batch: usize,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub requests_per_s: f64,
    pub inferences_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub mean_ms: f64,
    /// Server-side rows per execution, from the statistics extension.
    pub avg_batch: Option<f64>,
    /// Cores the load generator used (1.0 = one core busy).
    pub client_cpu: Option<f64>,
    pub server_cpu: Option<f64>,
    /// inferences_per_s over the in-process ceiling's.
    pub ceiling_ratio: Option<f64>,
}

impl Row {
    pub fn from_measured(model: &str, protocol: &str, mode: &str, batch: usize, m: &Measured) -> Row {
        let secs = m.elapsed.as_secs_f64().max(1e-9);
        let q = |p: f64| m.latencies.value_at_quantile(p) as f64 / 1000.0;
        Row {
            model: model.to_owned(),
            protocol: protocol.to_owned(),
            mode: mode.to_owned(),
            concurrency: None,
            rate: None,
            batch,
            requests: m.ok,
            errors: m.errors.clone(),
            requests_per_s: m.ok as f64 / secs,
            inferences_per_s: (m.ok * batch as u64) as f64 / secs,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            mean_ms: m.latencies.mean() / 1000.0,
            avg_batch: None,
            client_cpu: None,
            server_cpu: None,
            ceiling_ratio: None,
        }
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| model | protocol | load | batch | inferences/s | p50 ms | p90 ms | p99 ms | p99.9 ms | avg batch | errors | client CPU | server CPU | vs ceiling |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let load = match (r.concurrency, r.rate) {
            (Some(c), _) => format!("c={c}"),
            (None, Some(rate)) => format!("{rate:.0} req/s"),
            _ => "loop".to_owned(),
        };
        let errors: u64 = r.errors.values().sum();
        let errors = if errors == 0 {
            "0".to_owned()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.protocol,
            load,
            r.batch,
            r.inferences_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            opt(r.avg_batch, 1),
            errors,
            opt(r.client_cpu, 2),
            opt(r.server_cpu, 2),
            r.ceiling_ratio
                .map_or_else(|| "–".to_owned(), |x| format!("{:.0}%", x * 100.0)),
        ));
    }
    out
}
