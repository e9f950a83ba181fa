//! What is logged, where, and how: the server-wide settings from the
//! command line (KServe's logger spec: `mode`, `url`, metadata headers,
//! batching) and a model's own, from its `config.pbtxt` parameters.
use std::path::PathBuf;
use std::time::Duration;

use quiver_proto::inference::ModelConfig;

/// KServe's logger `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    All,
    Request,
    Response,
}

impl Mode {
    /// `None` for `none` / `off` (a model that turns logging off).
    pub fn parse(s: &str) -> Result<Option<Mode>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Some(Mode::All)),
            "request" => Ok(Some(Mode::Request)),
            "response" => Ok(Some(Mode::Response)),
            "none" | "off" => Ok(None),
            other => Err(format!(
                "'{other}' is not a payload log mode: all, request, response or none"
            )),
        }
    }

    pub fn requests(self) -> bool {
        matches!(self, Mode::All | Mode::Request)
    }

    pub fn responses(self) -> bool {
        matches!(self, Mode::All | Mode::Response)
    }

    /// Events one logged exchange makes.
    pub fn events(self) -> u64 {
        match self {
            Mode::All => 2,
            _ => 1,
        }
    }
}

/// What a model version logs: the server's settings with the model's
/// parameters over them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `None`: not logged.
    pub mode: Option<Mode>,
    /// The HTTP sink.
    pub url: Option<String>,
    /// Whether the server's file sink (when there is one) takes this model's events.
    pub file: bool,
    pub sample_rate: f64,
    /// Lower-case header names.
    pub metadata_headers: Vec<String>,
    pub redact_inputs: Vec<String>,
    /// Lower-case header names.
    pub redact_headers: Vec<String>,
    pub max_event_bytes: usize,
}

/// Server-wide: the defaults of every model, the sinks, the event attributes.
#[derive(Clone, Debug)]
pub struct Global {
    pub defaults: Settings,
    pub file: Option<FileSettings>,
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub queue: usize,
    pub queue_bytes: usize,
    pub workers: usize,
    pub scheduling: Scheduling,
    pub retry_for: Duration,
    /// `ce-source` when set; else one per model version on the HTTP port.
    pub source_uri: Option<String>,
    pub http_port: u16,
    pub inference_service: String,
    pub namespace: String,
    pub component: String,
    pub endpoint: String,
}

/// How the OS schedules the sinks' worker threads
/// (`--payload-log-scheduling`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduling {
    /// Linux's `SCHED_IDLE`: a worker runs when nothing else on its core
    /// wants to, so serving keeps the CPU and what the workers cannot keep
    /// up with is dropped (and counted) at the queue.
    #[default]
    Idle,
    /// The default policy: the workers take their share beside serving.
    Normal,
}

impl std::str::FromStr for Scheduling {
    type Err = String;
    fn from_str(s: &str) -> Result<Scheduling, String> {
        match s {
            "idle" => Ok(Scheduling::Idle),
            "normal" => Ok(Scheduling::Normal),
            other => Err(format!(
                "'{other}' is not a payload log scheduling policy (idle, normal)"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FileSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
}

pub fn names(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

pub fn check_url(url: &str, what: &str) -> Result<(), String> {
    match url.starts_with("http://") || url.starts_with("https://") {
        true => Ok(()),
        false => Err(format!("{what} {url}: an http:// or https:// URL is needed")),
    }
}

pub fn check_rate(rate: f64, what: &str) -> Result<f64, String> {
    match (0.0..=1.0).contains(&rate) {
        true => Ok(rate),
        false => Err(format!("{what} {rate}: a share from 0 to 1 is needed")),
    }
}

impl Settings {
    /// These settings with a model's `payload_log_*` parameters over them.
    pub fn for_model(&self, config: &ModelConfig) -> Result<Settings, String> {
        let mut s = self.clone();
        let param = |key: &str| config.parameters.get(key).map(|p| p.string_value.trim());
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        if let Some(v) = param("payload_log_mode") {
            s.mode = Mode::parse(v).map_err(|e| format!("parameter payload_log_mode: {e}"))?;
        }
        if let Some(v) = param("payload_log_url") {
            check_url(v, "parameter payload_log_url")?;
            s.url = Some(v.to_owned());
        }
        if let Some(v) = param("payload_log_file") {
            s.file = s.file
                && v.parse::<bool>()
                    .map_err(|_| format!("parameter payload_log_file: '{v}' is not true or false"))?;
        }
        if let Some(v) = param("payload_log_sample_rate") {
            let rate = v
                .parse::<f64>()
                .map_err(|_| format!("parameter payload_log_sample_rate: '{v}' is not a number"))?;
            s.sample_rate = check_rate(rate, "parameter payload_log_sample_rate")?;
        }
        if let Some(v) = param("payload_log_metadata_headers") {
            s.metadata_headers = names(&list(v));
        }
        if let Some(v) = param("payload_log_redact_inputs") {
            s.redact_inputs = list(v)
                .into_iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect();
        }
        if let Some(v) = param("payload_log_redact_headers") {
            s.redact_headers = names(&list(v));
        }
        if let Some(v) = param("payload_log_max_event_bytes") {
            s.max_event_bytes = v
                .parse::<usize>()
                .map_err(|_| format!("parameter payload_log_max_event_bytes: '{v}' is not a whole number"))?
                .max(1024);
        }
        Ok(s)
    }

    /// Whether anything is logged at all.
    pub fn logs(&self) -> bool {
        self.mode.is_some() && self.sample_rate > 0.0 && (self.url.is_some() || self.file)
    }
}
