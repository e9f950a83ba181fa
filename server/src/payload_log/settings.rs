//! What is logged, where, and how: the server-wide settings from the
//! command line (KServe's logger spec: `mode`, `url`, metadata headers,
//! batching) and a model's own, from its `config.pbtxt` parameters.
use std::path::PathBuf;
use std::time::Duration;

use quiver_proto::inference::ModelConfig;

use crate::config::Config;

/// KServe's logger `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    All,
    Request,
    Response,
}

impl Mode {
    /// `None` for `none` / `off` (a model that turns logging off).
    fn parse(s: &str) -> Result<Option<Mode>, String> {
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
    pub retry_for: Duration,
    /// `ce-source` when set; else one per model version on the HTTP port.
    pub source_uri: Option<String>,
    pub http_port: u16,
    pub inference_service: String,
    pub namespace: String,
    pub component: String,
    pub endpoint: String,
}

#[derive(Clone, Debug)]
pub struct FileSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
}

fn names(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

fn check_url(url: &str, what: &str) -> Result<(), String> {
    match url.starts_with("http://") || url.starts_with("https://") {
        true => Ok(()),
        false => Err(format!("{what} {url}: an http:// or https:// URL is needed")),
    }
}

fn check_rate(rate: f64, what: &str) -> Result<f64, String> {
    match (0.0..=1.0).contains(&rate) {
        true => Ok(rate),
        false => Err(format!("{what} {rate}: a share from 0 to 1 is needed")),
    }
}

impl Settings {
    /// The server's settings, checked.
    pub fn from_config(c: &Config) -> Result<Global, String> {
        if let Some(url) = &c.payload_log_url {
            check_url(url, "--payload-log-url")?;
        }
        let mode = Mode::parse(&c.payload_log_mode).map_err(|e| format!("--payload-log-mode: {e}"))?;
        if c.payload_log_batch_size == 0 || c.payload_log_queue == 0 || c.payload_log_workers == 0 {
            return Err(
                "--payload-log-batch-size, --payload-log-queue and --payload-log-workers must be at least 1".into(),
            );
        }
        if !(c.payload_log_retry_seconds >= 0.0 && c.payload_log_retry_seconds <= 86_400.0) {
            return Err("--payload-log-retry-seconds must be between 0 and 86400".into());
        }
        if c.payload_log_file_max_bytes < 4096 {
            return Err("--payload-log-file-max-bytes must be at least 4096".into());
        }
        let http_port = c.http_port;
        Ok(Global {
            defaults: Settings {
                mode,
                url: c.payload_log_url.clone(),
                file: c.payload_log_file.is_some(),
                sample_rate: check_rate(c.payload_log_sample_rate, "--payload-log-sample-rate")?,
                metadata_headers: names(&c.payload_log_metadata_headers),
                redact_inputs: c.payload_log_redact_inputs.clone(),
                redact_headers: names(&c.payload_log_redact_headers),
                max_event_bytes: c.payload_log_max_event_bytes.max(1024),
            },
            file: c.payload_log_file.clone().map(|path| FileSettings {
                path,
                max_bytes: c.payload_log_file_max_bytes,
                keep: c.payload_log_file_keep,
            }),
            batch_size: c.payload_log_batch_size,
            batch_interval: Duration::from_millis(c.payload_log_batch_interval_ms.max(1)),
            queue: c.payload_log_queue,
            queue_bytes: c.payload_log_queue_bytes,
            workers: c.payload_log_workers,
            retry_for: Duration::from_secs_f64(c.payload_log_retry_seconds),
            source_uri: c.payload_log_source_uri.clone(),
            http_port,
            inference_service: c.payload_log_inference_service.clone(),
            namespace: c.payload_log_namespace.clone(),
            component: c.payload_log_component.clone(),
            endpoint: c.payload_log_endpoint.clone(),
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::inference::ModelParameter;

    fn global(args: &[&str]) -> Result<Global, String> {
        use clap::Parser as _;
        Settings::from_config(&Config::parse_from(
            std::iter::once("quiver").chain(args.iter().copied()),
        ))
    }

    fn with_params(params: &[(&str, &str)]) -> ModelConfig {
        let mut c = ModelConfig::default();
        for (k, v) in params {
            c.parameters.insert(
                (*k).into(),
                ModelParameter {
                    string_value: (*v).into(),
                },
            );
        }
        c
    }

    #[test]
    fn a_model_overrides_the_server() {
        let g = global(&[
            "--payload-log-url",
            "http://sink:8080",
            "--payload-log-metadata-headers",
            "X-User",
        ])
        .unwrap();
        assert_eq!(g.defaults.mode, Some(Mode::All));
        assert_eq!(g.defaults.metadata_headers, vec!["x-user"]);
        assert!(g.defaults.logs());
        let s = g
            .defaults
            .for_model(&with_params(&[
                ("payload_log_mode", "request"),
                ("payload_log_sample_rate", "0.25"),
                ("payload_log_redact_inputs", "ssn, card"),
            ]))
            .unwrap();
        assert_eq!(s.mode, Some(Mode::Request));
        assert_eq!(s.sample_rate, 0.25);
        assert_eq!(s.redact_inputs, vec!["ssn", "card"]);
        assert_eq!(s.url.as_deref(), Some("http://sink:8080"));
        let off = g
            .defaults
            .for_model(&with_params(&[("payload_log_mode", "none")]))
            .unwrap();
        assert!(!off.logs());
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let e = global(&["--payload-log-mode", "everything"]).unwrap_err();
        assert!(e.contains("--payload-log-mode") && e.contains("everything"), "{e}");
        let e = global(&["--payload-log-url", "sink:8080"]).unwrap_err();
        assert!(e.contains("--payload-log-url"), "{e}");
        let e = global(&["--payload-log-sample-rate", "2"]).unwrap_err();
        assert!(e.contains("sample-rate"), "{e}");
        let g = global(&[]).unwrap();
        assert!(!g.defaults.logs());
        let e = g
            .defaults
            .for_model(&with_params(&[("payload_log_sample_rate", "most")]))
            .unwrap_err();
        assert!(e.contains("payload_log_sample_rate") && e.contains("most"), "{e}");
    }
}
