//! The process's log, and Triton's logging extension on it: `/v2/logging`
//! and gRPC `LogSettings` read and change, while quiver runs, whether info,
//! warning and error lines are written, the verbose level, the file the
//! lines go to, and the format (docs/observability.md).
//!
//! The subscriber is global, so these settings are too. [`install`] sets it
//! up with two handles the settings act through: the filter (the `--log`
//! directives, plus debug or trace for quiver's own crates at verbose level
//! 1 or 2) is reloaded when the level changes, and the writer looks at the
//! on/off switches and the file on each line. Where no subscriber was
//! installed (a test starting the server in-process), the settings are kept
//! and read back but act on nothing.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::error::Error;

/// Quiver's crates, turned up by a verbose level.
const OWN_CRATES: &[&str] = &[
    "quiver",
    "quiver_server",
    "quiver_engine",
    "quiver_runtimes",
    "quiver_monitor",
    "quiver_codec",
];

/// What a client reads and sets, in Triton's names.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Empty: standard error.
    pub log_file: String,
    pub log_info: bool,
    pub log_warnings: bool,
    pub log_errors: bool,
    pub log_verbose_level: u32,
    /// `default` or `ISO8601`; quiver's lines carry an RFC 3339 (ISO 8601)
    /// UTC time in both, so the two read the same.
    pub log_format: String,
}

/// A setting's value as the client sent it (JSON or gRPC's oneof).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(u64),
    Text(String),
}

impl Settings {
    /// The settings in Triton's order, for the wire.
    pub fn fields(&self) -> [(&'static str, Value); 6] {
        [
            ("log_file", Value::Text(self.log_file.clone())),
            ("log_info", Value::Bool(self.log_info)),
            ("log_warnings", Value::Bool(self.log_warnings)),
            ("log_errors", Value::Bool(self.log_errors)),
            ("log_verbose_level", Value::Number(self.log_verbose_level.into())),
            ("log_format", Value::Text(self.log_format.clone())),
        ]
    }

    /// `self` with `changes`, each checked; the first bad one is the error,
    /// naming the setting.
    fn with(&self, changes: &[(String, Value)]) -> Result<Settings, Error> {
        let mut next = self.clone();
        for (name, value) in changes {
            let wrong = |what: &str| Error::invalid(format!("log setting '{name}': {what}, got {}", shown(value)));
            let flag = |v: &Value| match v {
                Value::Bool(b) => Ok(*b),
                _ => Err(wrong("expected a boolean")),
            };
            match name.as_str() {
                "log_file" => match value {
                    Value::Text(path) => next.log_file = path.clone(),
                    _ => return Err(wrong("expected a string (a path, or \"\" for standard error)")),
                },
                "log_info" => next.log_info = flag(value)?,
                "log_warnings" => next.log_warnings = flag(value)?,
                "log_errors" => next.log_errors = flag(value)?,
                "log_verbose_level" => match value {
                    Value::Number(n) => {
                        next.log_verbose_level =
                            u32::try_from(*n).map_err(|_| wrong("expected a 32-bit unsigned integer"))?
                    }
                    _ => return Err(wrong("expected an unsigned integer")),
                },
                "log_format" => match value {
                    Value::Text(f) if f == "default" || f == "ISO8601" => next.log_format = f.clone(),
                    _ => return Err(wrong("expected \"default\" or \"ISO8601\"")),
                },
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown log setting '{name}': expected log_file, log_info, log_warnings, log_errors, log_verbose_level or log_format"
                    )));
                }
            }
        }
        Ok(next)
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Text(t) => format!("{t:?}"),
    }
}

/// The filter for `base` (the `--log` directives) at a verbose level.
fn filter(base: &str, verbose: u32) -> String {
    let level = match verbose {
        0 => return base.to_owned(),
        1 => "debug",
        _ => "trace",
    };
    let mut directives = base.to_owned();
    for name in OWN_CRATES {
        directives.push_str(&format!(",{name}={level}"));
    }
    directives
}

/// Where lines go and which levels are written; read on every line.
struct Output {
    info: AtomicBool,
    warnings: AtomicBool,
    errors: AtomicBool,
    file: ArcSwapOption<Mutex<File>>,
}

/// The writer `install` gives the subscriber.
#[derive(Clone)]
struct Writer(Arc<Output>);

/// One line's destination.
enum Line {
    Stderr(std::io::Stderr),
    File(Arc<Mutex<File>>),
    Dropped,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Line::Stderr(e) => e.write(buf),
            Line::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
            Line::Dropped => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Line::Stderr(e) => e.flush(),
            Line::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            Line::Dropped => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        match self.0.file.load_full() {
            Some(file) => Line::File(file),
            None => Line::Stderr(std::io::stderr()),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        match self.0.writes(meta.level()) {
            true => self.make_writer(),
            false => Line::Dropped,
        }
    }
}

impl Output {
    fn writes(&self, level: &Level) -> bool {
        match *level {
            Level::ERROR => self.errors.load(Relaxed),
            Level::WARN => self.warnings.load(Relaxed),
            Level::INFO => self.info.load(Relaxed),
            // Debug and trace lines are the verbose level's: the filter decides.
            _ => true,
        }
    }
}

/// What [`install`] set up, and the settings in force.
struct Log {
    settings: Mutex<Settings>,
    base: String,
    output: Arc<Output>,
    /// Replaces the subscriber's filter; `None` where none was installed.
    reload: Option<Reload>,
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static LOG: OnceLock<Log> = OnceLock::new();

fn defaults(verbose: u32) -> Settings {
    Settings {
        log_file: String::new(),
        log_info: true,
        log_warnings: true,
        log_errors: true,
        log_verbose_level: verbose,
        log_format: "default".into(),
    }
}

fn output() -> Arc<Output> {
    Arc::new(Output {
        info: AtomicBool::new(true),
        warnings: AtomicBool::new(true),
        errors: AtomicBool::new(true),
        file: ArcSwapOption::empty(),
    })
}

/// Installs the process's subscriber: `base` is `--log`'s filter, `initial`
/// what Triton's `--log-*` flags ask for. Called once, by `main`; an error
/// (a log file that cannot be opened) names the setting.
pub fn install(base: &str, initial: Settings) -> Result<(), Error> {
    let verbose = initial.log_verbose_level;
    let output = output();
    let (filter_layer, handle) = tracing_subscriber::reload::Layer::new(EnvFilter::new(filter(base, verbose)));
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Writer(Arc::clone(&output)))
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let _ = LOG.set(Log {
        settings: Mutex::new(defaults(verbose)),
        base: base.to_owned(),
        output,
        reload: Some(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))),
    });
    let changes: Vec<(String, Value)> = initial
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    update(&changes).map(|_| ())
}

fn log() -> &'static Log {
    LOG.get_or_init(|| Log {
        settings: Mutex::new(defaults(0)),
        base: "info".into(),
        output: output(),
        reload: None,
    })
}

/// The settings in force.
pub fn settings() -> Settings {
    log().settings.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Applies `changes` (all or none) and returns the settings now in force.
/// A file that cannot be opened is an error and changes nothing.
pub fn update(changes: &[(String, Value)]) -> Result<Settings, Error> {
    let log = log();
    let mut settings = log.settings.lock().unwrap_or_else(|e| e.into_inner());
    let next = settings.with(changes)?;
    if next.log_file != settings.log_file {
        let file = match next.log_file.as_str() {
            "" => None,
            path => Some(Arc::new(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::invalid(format!("log setting 'log_file': cannot open {path:?}: {e}")))?,
            ))),
        };
        log.output.file.store(file);
    }
    if next.log_verbose_level != settings.log_verbose_level
        && let Some(reload) = &log.reload
    {
        reload(EnvFilter::new(filter(&log.base, next.log_verbose_level))).map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Internal,
                format!("cannot change the log filter: {e}"),
            )
        })?;
    }
    log.output.info.store(next.log_info, Relaxed);
    log.output.warnings.store(next.log_warnings, Relaxed);
    log.output.errors.store(next.log_errors, Relaxed);
    if next != *settings {
        tracing::info!(settings = ?next, "log settings changed");
    }
    *settings = next;
    Ok(settings.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, value: Value) -> Vec<(String, Value)> {
        vec![(name.to_owned(), value)]
    }

    #[test]
    fn each_setting_takes_only_its_type_and_errors_name_it() {
        let s = defaults(0);
        let next = s
            .with(&[
                ("log_info".into(), Value::Bool(false)),
                ("log_verbose_level".into(), Value::Number(2)),
                ("log_format".into(), Value::Text("ISO8601".into())),
            ])
            .unwrap();
        assert!(!next.log_info && next.log_warnings);
        assert_eq!((next.log_verbose_level, next.log_format.as_str()), (2, "ISO8601"));
        for (name, value, says) in [
            ("log_info", Value::Text("yes".into()), "expected a boolean"),
            ("log_verbose_level", Value::Bool(true), "unsigned integer"),
            ("log_verbose_level", Value::Number(1 << 40), "32-bit"),
            ("log_format", Value::Text("json".into()), "\"default\" or \"ISO8601\""),
            ("log_file", Value::Number(3), "expected a string"),
        ] {
            let e = s.with(&change(name, value)).unwrap_err();
            assert!(e.message.contains(name) && e.message.contains(says), "{}", e.message);
        }
        let e = s.with(&change("log_level", Value::Number(1))).unwrap_err();
        assert!(e.message.contains("unknown log setting 'log_level'"), "{}", e.message);
    }

    #[test]
    fn a_verbose_level_turns_up_quivers_crates_only() {
        assert_eq!(filter("warn", 0), "warn");
        let one = filter("warn", 1);
        assert!(one.starts_with("warn,") && one.contains("quiver_server=debug"));
        assert!(filter("info", 3).contains("quiver_engine=trace"));
    }

    #[test]
    fn the_writer_drops_the_levels_switched_off() {
        let out = output();
        out.warnings.store(false, Relaxed);
        assert!(!out.writes(&Level::WARN));
        assert!(out.writes(&Level::INFO) && out.writes(&Level::ERROR) && out.writes(&Level::DEBUG));
    }
}
