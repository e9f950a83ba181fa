//! Trace settings as Triton has them: one global setting and settings per
//! model, changed at run time through the trace extension
//! (`/v2[/models/{m}]/trace/setting`, gRPC `TraceSetting`).
//!
//! A model's setting names some fields itself and mirrors the global
//! setting for the others (a later global change reaches them); clearing
//! every field of a model (JSON `null`, an empty gRPC value) drops its
//! setting. Clearing a global field returns it to its start-up value.
//!
//! Sampling counts, as Triton does (no coin flips): with rate N the Nth,
//! 2Nth, ... request of a setting is traced; a request that carries a
//! `traceparent` is traced whatever the rate and does not move the count.
//! `trace_count` is the number of traces left (-1: no limit).
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

/// The OpenTelemetry exporter's settings (`--trace-config opentelemetry,...`
/// and the `OTEL_*` environment).
#[derive(Clone, Debug, PartialEq)]
pub struct Otel {
    pub url: String,
    /// Resource attributes; `service.name` is always among them.
    pub resource: Vec<(String, String)>,
    /// Traces waiting for export; more are dropped and counted.
    pub max_queue: usize,
    /// The longest a trace waits for its batch.
    pub schedule_delay: Duration,
    /// Traces per export request.
    pub max_batch: usize,
}

impl Default for Otel {
    /// The OpenTelemetry SDK's batch processor defaults, and Triton's URL.
    fn default() -> Otel {
        Otel {
            url: "http://localhost:4318/v1/traces".into(),
            resource: Vec::new(),
            max_queue: 2048,
            schedule_delay: Duration::from_millis(5000),
            max_batch: 512,
        }
    }
}

/// Tracing as the command line and environment set it.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub mode: Mode,
    pub values: Values,
    pub otel: Otel,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Triton,
            values: Values::default(),
            otel: Otel::default(),
        }
    }
}

/// Where traces go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Triton's JSON trace file (`--trace-config triton,file=...`).
    Triton,
    /// OTLP over HTTP (`--trace-config mode=opentelemetry`).
    OpenTelemetry,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Triton => "triton",
            Mode::OpenTelemetry => "opentelemetry",
        }
    }
}

/// The values of one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values {
    /// TIMESTAMPS on (OFF when false). TENSORS is refused, never stored.
    pub timestamps: bool,
    /// One trace every `rate` requests; at least 1.
    pub rate: u32,
    /// Traces to take; -1 for no limit.
    pub count: i32,
    /// Triton mode: write the file every this many traces (0: at exit).
    pub log_frequency: u32,
    /// Triton mode's trace file.
    pub file: String,
}

impl Default for Values {
    /// Triton's defaults: level OFF, rate 1000, no count limit.
    fn default() -> Values {
        Values {
            timestamps: false,
            rate: 1000,
            count: -1,
            log_frequency: 0,
            file: String::new(),
        }
    }
}

/// The fields a change can name, in the order settings are reported.
const FIELDS: [&str; 4] = ["trace_level", "trace_rate", "trace_count", "log_frequency"];

/// One setting in force, with its sampling state. Replaced, never changed:
/// a change starts its counts afresh (as Triton's does).
pub struct Setting {
    pub values: Values,
    /// Which of [`FIELDS`] a model's setting names itself.
    own: [bool; 4],
    seen: AtomicU64,
    left: AtomicI64,
}

impl Setting {
    fn new(values: Values, own: [bool; 4]) -> Arc<Setting> {
        let left = values.count.into();
        Arc::new(Setting {
            values,
            own,
            seen: AtomicU64::new(0),
            left: AtomicI64::new(left),
        })
    }

    /// Whether this request is traced. `forced`: whether it carries a trace
    /// context, asked only when tracing is on (a header lookup).
    pub fn sample(&self, forced: impl FnOnce() -> bool) -> bool {
        if !self.values.timestamps {
            return false;
        }
        if !forced() && !(self.seen.fetch_add(1, Relaxed) + 1).is_multiple_of(u64::from(self.values.rate)) {
            return false;
        }
        self.values.count < 0
            || self
                .left
                .fetch_update(Relaxed, Relaxed, |n| (n > 0).then(|| n - 1))
                .is_ok()
    }

    /// The setting as the trace extension answers it: each field's values
    /// (one string, or the levels).
    pub fn report(&self, mode: Mode) -> Vec<(&'static str, Vec<String>)> {
        let v = &self.values;
        let level = if v.timestamps { "TIMESTAMPS" } else { "OFF" };
        let count = if v.count < 0 { -1 } else { self.left.load(Relaxed) };
        vec![
            ("trace_level", vec![level.to_owned()]),
            ("trace_rate", vec![v.rate.to_string()]),
            ("trace_count", vec![count.to_string()]),
            ("log_frequency", vec![v.log_frequency.to_string()]),
            ("trace_file", vec![v.file.clone()]),
            ("trace_mode", vec![mode.as_str().to_owned()]),
        ]
    }
}

struct Table {
    global: Arc<Setting>,
    models: HashMap<String, Arc<Setting>>,
}

/// The settings in force: read on every request without a lock, replaced
/// whole under one writer lock.
pub struct Settings {
    pub mode: Mode,
    /// The start-up values: what clearing a global field returns to.
    defaults: Values,
    table: ArcSwap<Table>,
    writer: Mutex<()>,
}

/// A change to one field: `None` clears it.
pub type Change = (String, Option<Vec<String>>);

impl Settings {
    pub fn new(mode: Mode, defaults: Values) -> Settings {
        let global = Setting::new(defaults.clone(), [true; 4]);
        Settings {
            mode,
            defaults,
            table: ArcSwap::from_pointee(Table {
                global,
                models: HashMap::new(),
            }),
            writer: Mutex::new(()),
        }
    }

    /// The setting a model's requests are sampled by.
    pub fn for_model(&self, model: &str) -> Arc<Setting> {
        let table = self.table.load();
        match table.models.get(model) {
            Some(s) => Arc::clone(s),
            None => Arc::clone(&table.global),
        }
    }

    /// Whether a request of `model` is traced (the request path's call: no
    /// reference count taken).
    pub fn sample(&self, model: &str, forced: impl FnOnce() -> bool) -> bool {
        let table = self.table.load();
        if table.models.is_empty() {
            return table.global.sample(forced);
        }
        table.models.get(model).unwrap_or(&table.global).sample(forced)
    }

    pub fn report(&self, model: Option<&str>) -> Vec<(&'static str, Vec<String>)> {
        match model {
            Some(m) => self.for_model(m).report(self.mode),
            None => self.table.load().global.report(self.mode),
        }
    }

    /// Applies `changes` to the global setting or a model's, all or none;
    /// an error names the setting and what was wrong with it.
    pub fn update(&self, model: Option<&str>, changes: &[Change]) -> Result<(), String> {
        let parsed = parse_changes(self.mode, changes)?;
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let table = self.table.load();
        let mut models = table.models.clone();
        let global = match model {
            None => {
                let current = &table.global;
                let mut values = current.values.clone();
                for (field, value) in &parsed {
                    set(&mut values, *field, value.as_ref(), &self.defaults);
                }
                let global = Setting::new(values, [true; 4]);
                // Models mirror the global fields they do not name.
                for setting in models.values_mut() {
                    *setting = Setting::new(merge(&setting.values, setting.own, &global.values), setting.own);
                }
                global
            }
            Some(name) => {
                let current = models.get(name);
                let mut own = current.map_or([false; 4], |s| s.own);
                let mut values = current.map_or_else(|| table.global.values.clone(), |s| s.values.clone());
                for (field, value) in &parsed {
                    own[*field] = value.is_some();
                    set(&mut values, *field, value.as_ref(), &table.global.values);
                }
                if own.iter().any(|o| *o) {
                    models.insert(name.to_owned(), Setting::new(values, own));
                } else {
                    models.remove(name);
                }
                Arc::clone(&table.global)
            }
        };
        self.table.store(Arc::new(Table { global, models }));
        Ok(())
    }
}

/// A field's new value, parsed.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Level(bool),
    Number(i64),
}

/// The model's own fields from `own`, the others from `global`.
fn merge(current: &Values, own: [bool; 4], global: &Values) -> Values {
    let mut v = current.clone();
    if !own[0] {
        v.timestamps = global.timestamps;
    }
    if !own[1] {
        v.rate = global.rate;
    }
    if !own[2] {
        v.count = global.count;
    }
    if !own[3] {
        v.log_frequency = global.log_frequency;
    }
    v
}

fn set(values: &mut Values, field: usize, value: Option<&Value>, fallback: &Values) {
    match (field, value) {
        (0, Some(Value::Level(on))) => values.timestamps = *on,
        (0, None) => values.timestamps = fallback.timestamps,
        (1, Some(Value::Number(n))) => values.rate = *n as u32,
        (1, None) => values.rate = fallback.rate,
        (2, Some(Value::Number(n))) => values.count = *n as i32,
        (2, None) => values.count = fallback.count,
        (3, Some(Value::Number(n))) => values.log_frequency = *n as u32,
        (3, None) => values.log_frequency = fallback.log_frequency,
        _ => {}
    }
}

fn parse_changes(mode: Mode, changes: &[Change]) -> Result<Vec<(usize, Option<Value>)>, String> {
    changes
        .iter()
        .map(|(name, values)| {
            let field = match name.as_str() {
                "trace_file" => {
                    return Err(
                        "trace setting 'trace_file' cannot be changed over the network: start quiver with \
                         --trace-config triton,file=PATH"
                            .to_owned(),
                    );
                }
                "trace_mode" => {
                    return Err(
                        "trace setting 'trace_mode' cannot be changed at run time: start quiver with \
                         --trace-config mode=triton|opentelemetry"
                            .to_owned(),
                    );
                }
                other => FIELDS.iter().position(|f| *f == other).ok_or_else(|| {
                    format!("unknown trace setting '{other}' (the settings are {FIELDS:?}, trace_file, trace_mode)")
                })?,
            };
            let Some(values) = values else {
                return Ok((field, None));
            };
            let value = if field == 0 {
                Value::Level(level(mode, values).map_err(|e| format!("trace setting 'trace_level': {e}"))?)
            } else {
                let [one] = values.as_slice() else {
                    return Err(format!(
                        "trace setting '{name}': expected one value, got {}",
                        values.len()
                    ));
                };
                Value::Number(number(field, one).map_err(|e| format!("trace setting '{name}': {e}"))?)
            };
            Ok((field, Some(value)))
        })
        .collect()
}

/// Levels to TIMESTAMPS on or off. OFF alone turns tracing off; TENSORS is
/// refused with the reason.
pub fn level(mode: Mode, levels: &[String]) -> Result<bool, String> {
    if levels.is_empty() {
        return Err("expected at least one level (OFF, TIMESTAMPS)".into());
    }
    let mut on = false;
    for l in levels {
        match l.to_ascii_uppercase().as_str() {
            "OFF" => {}
            "TIMESTAMPS" => on = true,
            "TENSORS" if mode == Mode::OpenTelemetry => {
                return Err("TENSORS trace level is not supported with OpenTelemetry mode".into());
            }
            "TENSORS" => {
                return Err("TENSORS trace level is not supported by quiver: use TIMESTAMPS".into());
            }
            other => return Err(format!("unknown trace level '{other}' (OFF, TIMESTAMPS)")),
        }
    }
    Ok(on)
}

/// A number field's value: rate at least 1, count -1 or more, log frequency 0 or more.
fn number(field: usize, text: &str) -> Result<i64, String> {
    let (min, max, what) = match field {
        1 => (1, i64::from(u32::MAX), "a positive integer"),
        2 => (-1, i64::from(i32::MAX), "an integer of -1 (no limit) or more"),
        _ => (0, i64::from(u32::MAX), "an integer of 0 or more"),
    };
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("expected {what}, got '{text}'"))
}

/// Parses a number field of `--trace-config` (`rate`, `count`, `log-frequency`).
pub fn parse_number(name: &str, text: &str) -> Result<i64, String> {
    let field = match name {
        "rate" => 1,
        "count" => 2,
        _ => 3,
    };
    number(field, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(rate: u32, count: i32) -> Values {
        Values {
            timestamps: true,
            rate,
            count,
            ..Values::default()
        }
    }

    fn change(name: &str, values: Option<&[&str]>) -> Change {
        (
            name.to_owned(),
            values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        )
    }

    fn field(s: &Settings, model: Option<&str>, name: &str) -> Vec<String> {
        s.report(model).into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn rate_counts_requests_and_count_stops_tracing() {
        let s = Settings::new(Mode::OpenTelemetry, on(4, -1));
        let traced: Vec<bool> = (0..12).map(|_| s.sample("m", || false)).collect();
        assert_eq!(traced.iter().filter(|t| **t).count(), 3);
        assert!(traced[3] && traced[7] && traced[11] && !traced[0]);
        // A trace context is traced whatever the rate, without moving the count.
        assert!(s.sample("m", || true));
        assert!(!s.sample("m", || false));

        let s = Settings::new(Mode::OpenTelemetry, on(1, 2));
        assert_eq!((0..10).filter(|_| s.sample("m", || false)).count(), 2);
        assert_eq!(field(&s, None, "trace_count"), ["0"]);
        assert!(!s.sample("m", || true));
    }

    #[test]
    fn a_models_setting_mirrors_the_global_fields_it_does_not_name() {
        let s = Settings::new(Mode::OpenTelemetry, Values::default());
        s.update(Some("m"), &[change("trace_rate", Some(&["2"]))]).unwrap();
        assert_eq!(field(&s, Some("m"), "trace_rate"), ["2"]);
        assert_eq!(field(&s, Some("m"), "trace_level"), ["OFF"]);
        assert_eq!(field(&s, None, "trace_rate"), ["1000"]);
        // The global level reaches the model; its own rate stays.
        s.update(None, &[change("trace_level", Some(&["TIMESTAMPS"]))]).unwrap();
        assert_eq!(field(&s, Some("m"), "trace_level"), ["TIMESTAMPS"]);
        assert_eq!(field(&s, Some("m"), "trace_rate"), ["2"]);
        assert_eq!((0..4).filter(|_| s.sample("m", || false)).count(), 2);
        assert_eq!((0..4).filter(|_| s.sample("other", || false)).count(), 0);
        // Clearing its one field drops the model's setting.
        s.update(Some("m"), &[change("trace_rate", None)]).unwrap();
        assert_eq!(field(&s, Some("m"), "trace_rate"), ["1000"]);
        // Clearing a global field returns to the start-up value.
        s.update(None, &[change("trace_level", None)]).unwrap();
        assert_eq!(field(&s, None, "trace_level"), ["OFF"]);
    }

    #[test]
    fn bad_values_name_the_setting_and_change_nothing() {
        let s = Settings::new(Mode::OpenTelemetry, Values::default());
        for (name, value, needle) in [
            ("trace_rate", "-1", "trace_rate"),
            ("trace_rate", "0", "positive"),
            ("trace_count", "-2", "trace_count"),
            ("log_frequency", "x", "log_frequency"),
            ("trace_level", "LOUD", "unknown trace level 'LOUD'"),
            ("trace_level", "TENSORS", "not supported with OpenTelemetry"),
            ("trace_file", "/tmp/x", "trace_file"),
            ("nonsense", "1", "unknown trace setting 'nonsense'"),
        ] {
            let e = s
                .update(
                    None,
                    &[change("trace_count", Some(&["5"])), change(name, Some(&[value]))],
                )
                .unwrap_err();
            assert!(e.contains(needle), "{name}={value}: {e}");
        }
        assert_eq!(field(&s, None, "trace_count"), ["-1"]);
    }
}
