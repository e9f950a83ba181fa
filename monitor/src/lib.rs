//! Model monitoring: drift and data quality of what each version sees and
//! answers, measured against a reference sample shipped beside the model,
//! over time windows, off the request path.
//!
//! - `reference.rs` reads the reference (`reference.npz` or V2 JSON),
//!   `settings.rs` the server's defaults and a model's `monitoring.json`;
//! - `profile.rs` turns them into a profile at load (bins, samples,
//!   categories); `window.rs` accumulates a window of live traffic;
//!   `stats.rs` holds the statistics and `judge.rs` the states;
//! - `monitor.rs` is a version's monitor and its tap, `worker.rs` the one
//!   monitoring thread, `events.rs` the state changes it reports,
//!   `report.rs` the JSON report and the Prometheus series.
//!
//! [`Monitoring`] is the [`TapFactory`] the server registers: at each
//! version's load it looks for a reference, and a version that has one is
//! monitored, with the defaults and no other setting.
pub mod events;
pub mod judge;
pub mod monitor;
pub mod profile;
pub mod queue;
pub mod reference;
pub mod report;
pub mod settings;
pub mod stats;
pub mod values;
pub mod window;
pub mod worker;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use quiver_engine::tap::{Tap, TapFactory, Version};

pub use events::Event;
pub use monitor::Monitor;
pub use settings::Settings;

type Sink = Box<dyn Fn(Event) + Send>;

/// The monitors of the loaded versions, and the thread that feeds them.
pub struct Monitoring {
    defaults: Settings,
    registry: worker::Registry,
    /// The thread's queue, from the first monitored version on: a server
    /// that monitors nothing runs no thread.
    jobs: OnceLock<Arc<queue::Jobs<monitor::Record>>>,
    sink: Mutex<Option<Sink>>,
}

impl Monitoring {
    /// Monitoring with the server's defaults; `sink` gets every state
    /// change (it must not block: the server queues them for its webhooks).
    pub fn new(defaults: Settings, sink: impl Fn(Event) + Send + 'static) -> Arc<Monitoring> {
        Arc::new(Monitoring {
            defaults,
            registry: worker::Registry::default(),
            jobs: OnceLock::new(),
            sink: Mutex::new(Some(Box::new(sink))),
        })
    }

    fn jobs(&self) -> Arc<queue::Jobs<monitor::Record>> {
        let jobs = self.jobs.get_or_init(|| {
            let sink = self.sink.lock().unwrap().take().expect("the thread starts once");
            worker::start(Arc::clone(&self.registry), sink)
        });
        Arc::clone(jobs)
    }

    /// The monitors of the versions loaded now.
    pub fn monitors(&self) -> Vec<Arc<Monitor>> {
        self.registry
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.upgrade())
            .collect()
    }

    /// The monitor of one version (the newest, while a reload drains).
    pub fn find(&self, model: &str, version: u64) -> Option<Arc<Monitor>> {
        self.monitors()
            .into_iter()
            .rev()
            .find(|m| m.model == model && m.version == version)
    }
}

/// Appends every live monitor's series (all servers of the process) to a
/// Prometheus exposition.
pub fn render(out: &mut String) {
    let live: Vec<Arc<Monitor>> = {
        let mut all = worker::ALL.lock().unwrap();
        all.retain(|m| m.strong_count() > 0);
        all.iter().filter_map(|m| m.upgrade()).collect()
    };
    report::prometheus(&live, queue::DROPPED.load(std::sync::atomic::Ordering::Relaxed), out);
}

impl TapFactory for Monitoring {
    fn tap(&self, version: &Version<'_>, model_dir: Option<&Path>) -> Result<Option<Arc<dyn Tap>>, String> {
        let Some(model_dir) = model_dir else { return Ok(None) };
        let (settings, configured) = self.defaults.for_version(model_dir, version.version)?;
        let Some((source, arrays)) = reference::find(model_dir, version.version)? else {
            if configured {
                tracing::warn!(
                    model = version.name,
                    version = version.version,
                    "monitoring.json but no reference.npz (or reference.json): the version is not monitored"
                );
            }
            return Ok(None);
        };
        let profile = profile::build(source, &arrays, version.spec, &settings)?;
        let monitor = Arc::new(Monitor::new(
            version.name.to_owned(),
            version.version,
            settings,
            Arc::new(profile),
            self.jobs(),
        ));
        self.registry.lock().unwrap().push(Arc::downgrade(&monitor));
        worker::ALL.lock().unwrap().push(Arc::downgrade(&monitor));
        tracing::info!(
            model = version.name,
            version = version.version,
            reference = monitor.layout().source,
            rows = monitor.layout().rows,
            features = monitor.layout().tensors.iter().map(|t| t.features.len()).sum::<usize>(),
            "monitoring drift and data quality"
        );
        Ok(Some(Arc::new(monitor::MonitorTap(monitor))))
    }
}
