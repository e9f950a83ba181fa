//! A version's monitor: its tap on the request path, its windows per
//! traffic variant, and the judging of each closed window.
//!
//! The request path pays for a sampling coin, a lookup of the watched
//! tensors by name, reference counts on their (shared) bytes and one
//! bounded-queue push; everything else happens on the monitoring thread
//! (`worker.rs`).
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quiver_engine::error::ErrorKind;
use quiver_engine::tap::{Exchange, Tap};
use quiver_runtimes::DataType;

use crate::events::{Change, Event};
use crate::judge::{self, Scores, State};
use crate::profile::{Kept, Profile, Reference};
use crate::queue::Jobs;
use crate::settings::Settings;
use crate::values::Elements;
use crate::window::Window;

/// A window below the minimum sample carries on for at most this many
/// window lengths; then it is dropped unjudged.
const CARRY_WINDOWS: u32 = 10;
/// A judgement older than this many windows is stale: its states leave the
/// metrics (an alert on them resolves) and the API marks it.
const STALE_WINDOWS: u32 = 3;
/// Closed windows kept per variant for a freeze, at most, and the values
/// they may hold together (8 MiB of samples).
const HISTORY_WINDOWS: usize = 60;
const HISTORY_VALUES: usize = 1 << 20;
/// The most traffic variants a version keeps windows for.
const MAX_VARIANTS: usize = 8;
/// Event ids: unique within the process (with the start time, the server
/// makes them unique across restarts).
static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);
static PROCESS: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ std::process::id() as u128
});

pub struct Monitor {
    pub model: String,
    pub version: u64,
    pub settings: Settings,
    /// The profile the version loaded with: its tensors and features are
    /// what the request path looks for. A frozen reference replaces the
    /// numbers (in `inner`), never this layout.
    layout: Arc<Profile>,
    inner: Mutex<Inner>,
    /// Variant names seen, so a record carries an `Arc` and not a copy.
    names: RwLock<Vec<Arc<str>>>,
    jobs: Arc<Jobs<Record>>,
    coin: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) observed: AtomicU64,
}

/// What the request path hands the monitoring thread.
pub struct Record {
    pub monitor: Arc<Monitor>,
    pub variant: Option<Arc<str>>,
    /// (profile tensor, rows, row length, type, bytes).
    pub tensors: Vec<(usize, usize, usize, DataType, Bytes)>,
    /// Refused as invalid: the profile tensors the error names.
    pub refused: Option<Vec<usize>>,
    /// The tensor bytes it keeps alive while queued.
    pub bytes: usize,
}

/// The current profile and the windows judged against it.
pub struct Inner {
    pub profile: Arc<Profile>,
    pub variants: Vec<Variant>,
}

pub struct Variant {
    pub name: Option<Arc<str>>,
    pub window: Window,
    pub judged: Option<Judged>,
    /// The last closed windows' samples, newest last, for a freeze.
    pub history: VecDeque<History>,
}

/// What a closed window leaves for a later freeze.
pub struct History {
    pub closed_at: SystemTime,
    /// Per tensor, per feature.
    pub kept: Vec<Vec<Kept>>,
}

/// A closed, judged window.
pub struct Judged {
    pub opened_at: SystemTime,
    pub closed_at: SystemTime,
    pub closed: Instant,
    pub rows: u64,
    pub requests: u64,
    /// Per tensor, per feature.
    pub features: Vec<Vec<FeatureJudgement>>,
    /// Per tensor: nan, out_of_range, unseen_category and refused ratios.
    pub quality: Vec<Quality>,
    pub drift_share: f64,
    pub state: State,
}

pub struct FeatureJudgement {
    pub state: State,
    pub samples: u64,
    pub scores: Scores,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub counts: Vec<u64>,
}

#[derive(Clone, Copy, Default)]
pub struct Quality {
    pub nan: f64,
    pub out_of_range: f64,
    pub unseen_category: f64,
    pub refused: f64,
}

impl Monitor {
    pub(crate) fn new(
        model: String,
        version: u64,
        settings: Settings,
        profile: Arc<Profile>,
        jobs: Arc<Jobs<Record>>,
    ) -> Monitor {
        Monitor {
            model,
            version,
            settings,
            layout: Arc::clone(&profile),
            inner: Mutex::new(Inner {
                profile,
                variants: Vec::new(),
            }),
            names: RwLock::new(Vec::new()),
            jobs,
            coin: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            dropped: AtomicU64::new(0),
            observed: AtomicU64::new(0),
        }
    }

    /// Whether this request is in the sample (`sample_rate`).
    fn sampled(&self) -> bool {
        if self.settings.sample_rate >= 1.0 {
            return true;
        }
        // A Weyl sequence: evenly spread, lock-free, no thread-local state.
        let x = self.coin.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed);
        let mixed = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        ((mixed >> 11) as f64 / (1u64 << 53) as f64) < self.settings.sample_rate
    }

    fn variant_name(&self, name: Option<&str>) -> Option<Arc<str>> {
        let name = name?;
        if let Some(n) = self.names.read().unwrap().iter().find(|n| &***n == name) {
            return Some(Arc::clone(n));
        }
        let mut names = self.names.write().unwrap();
        if names.len() >= MAX_VARIANTS {
            return None;
        }
        let n: Arc<str> = name.into();
        names.push(Arc::clone(&n));
        Some(n)
    }

    /// The record of an exchange, `None` when there is nothing to watch.
    fn record(self: &Arc<Self>, exchange: &Exchange<'_>) -> Option<Record> {
        let mut record = Record {
            monitor: Arc::clone(self),
            variant: self.variant_name(exchange.variant),
            tensors: Vec::new(),
            refused: None,
            bytes: 0,
        };
        match exchange.result {
            Ok(answer) => {
                let inputs = exchange.request.map(|r| r.inputs.as_slice()).unwrap_or(&[]);
                for (i, t) in self.layout.tensors.iter().enumerate() {
                    let list = if t.output { answer.outputs.as_slice() } else { inputs };
                    let Some(tensor) = list.iter().find(|x| x.name == t.name) else {
                        continue;
                    };
                    let Some(rows) = t.rows_of(&tensor.shape) else { continue };
                    let count = tensor.element_count().unwrap_or(0);
                    let row_len = count.checked_div(rows).unwrap_or(0);
                    record.bytes += tensor.data.len();
                    record
                        .tensors
                        .push((i, rows, row_len, tensor.datatype, tensor.data.clone()));
                }
            }
            Err(e) if e.kind == ErrorKind::InvalidArgument => {
                let named = self
                    .layout
                    .tensors
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| !t.output && e.message.contains(&format!("'{}'", t.name)))
                    .map(|(i, _)| i)
                    .collect();
                record.refused = Some(named);
            }
            Err(_) => return None,
        }
        Some(record)
    }

    /// Adds a record to its variant's window (the monitoring thread).
    pub(crate) fn absorb(&self, record: Record, now: Instant, events: &mut Vec<Event>) {
        let mut inner = self.inner.lock().unwrap();
        let Inner { profile, variants } = &mut *inner;
        let v = self.variant(profile, variants, &record.variant);
        self.close_if_due(profile, v, now, events);
        let w = &mut v.window;
        w.requests += 1;
        if let Some(named) = &record.refused {
            for &t in named {
                w.refused[t] += 1;
            }
            return;
        }
        for (t, rows, row_len, datatype, data) in &record.tensors {
            let Some(cells) = Elements::new(*datatype, data) else {
                continue;
            };
            if cells.len() < rows * row_len {
                continue;
            }
            w.add(
                *t,
                &profile.tensors[*t],
                &cells,
                *rows,
                *row_len,
                self.settings.reservoir,
            );
        }
    }

    fn variant<'v>(
        &self,
        profile: &Profile,
        variants: &'v mut Vec<Variant>,
        name: &Option<Arc<str>>,
    ) -> &'v mut Variant {
        let i = match variants.iter().position(|v| v.name == *name) {
            Some(i) => i,
            None => {
                let seed = self.version.wrapping_mul(31).wrapping_add(variants.len() as u64 + 1);
                variants.push(Variant {
                    name: name.clone(),
                    window: Window::new(&profile.tensors, seed),
                    judged: None,
                    history: VecDeque::new(),
                });
                variants.len() - 1
            }
        };
        &mut variants[i]
    }

    /// Closes every variant's window that is due (the thread's tick).
    pub(crate) fn tick(&self, now: Instant, events: &mut Vec<Event>) {
        let mut inner = self.inner.lock().unwrap();
        let Inner { profile, variants } = &mut *inner;
        for v in variants.iter_mut() {
            self.close_if_due(profile, v, now, events);
        }
    }

    fn close_if_due(&self, profile: &Profile, v: &mut Variant, now: Instant, events: &mut Vec<Event>) {
        let window = self.settings.window;
        let age = now.saturating_duration_since(v.window.opened);
        if age < window {
            return;
        }
        let seed = v.window.opened.elapsed().as_nanos() as u64 ^ self.version;
        if v.window.rows() < self.settings.min_samples {
            // Too few rows to judge: the window carries on, up to a point.
            if age >= window * CARRY_WINDOWS {
                v.window = Window::new(&profile.tensors, seed);
            }
            return;
        }
        let closed = std::mem::replace(&mut v.window, Window::new(&profile.tensors, seed));
        let judged = self.judge(profile, &closed, now);
        self.changes(profile, v.name.as_deref(), v.judged.as_ref(), &judged, events);
        v.history.push_back(History {
            closed_at: judged.closed_at,
            kept: keep(profile, closed),
        });
        // Memory stays bounded: a number of windows that fits the budget.
        let per_window = profile.tensors.iter().map(|t| t.features.len()).sum::<usize>() * self.settings.reservoir;
        let windows = (HISTORY_VALUES / per_window.max(1)).clamp(1, HISTORY_WINDOWS);
        while v.history.len() > windows {
            v.history.pop_front();
        }
        v.judged = Some(judged);
    }

    fn judge(&self, current: &Profile, w: &Window, now: Instant) -> Judged {
        let mut features = Vec::new();
        let mut quality = Vec::new();
        let (mut inputs, mut drifting) = (0usize, 0usize);
        for (t, profile) in current.tensors.iter().enumerate() {
            let tw = &w.tensors[t];
            let mut judged = Vec::new();
            for (f, feature) in profile.features.iter().enumerate() {
                let fw = &tw.features[f];
                let verdict = judge::judge(feature, fw, &self.settings, current.tests);
                if !profile.output {
                    inputs += 1;
                    drifting += (verdict.state == State::Drift) as usize;
                }
                judged.push(FeatureJudgement {
                    state: verdict.state,
                    samples: fw.n,
                    scores: verdict.scores,
                    mean: fw.mean(),
                    std: fw.std(),
                    min: fw.min,
                    max: fw.max,
                    counts: fw.counts.clone(),
                });
            }
            features.push(judged);
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            quality.push(Quality {
                nan: ratio(tw.nan, tw.numeric),
                out_of_range: ratio(tw.out_of_range, tw.numeric - tw.nan),
                unseen_category: ratio(tw.unseen, tw.categorical),
                refused: ratio(w.refused[t], w.requests),
            });
        }
        let drift_share = if inputs == 0 {
            0.0
        } else {
            drifting as f64 / inputs as f64
        };
        Judged {
            opened_at: w.opened_at,
            closed_at: SystemTime::now(),
            closed: now,
            rows: w.rows(),
            requests: w.requests,
            features,
            quality,
            drift_share,
            state: if inputs > 0 && drift_share >= self.settings.drift_share {
                State::Drift
            } else {
                State::Ok
            },
        }
    }

    /// The events for what changed between two judgements, logged. Before
    /// the first judgement every state was ok.
    fn changes(
        &self,
        current: &Profile,
        variant: Option<&str>,
        before: Option<&Judged>,
        now: &Judged,
        events: &mut Vec<Event>,
    ) {
        let model_before = before.map_or(State::Ok, |b| b.state);
        let event = |change: Option<Change>| Event {
            model: self.model.clone(),
            version: self.version,
            variant: variant.map(str::to_owned),
            window_start: now.opened_at,
            window_end: now.closed_at,
            rows: now.rows,
            drift_share: now.drift_share,
            model_state: (model_before, now.state),
            change,
            id: format!("{:x}-{}", *PROCESS, NEXT_EVENT.fetch_add(1, Relaxed)),
        };
        for (t, profile) in current.tensors.iter().enumerate() {
            for (f, feature) in profile.features.iter().enumerate() {
                let old = before.map_or(State::Ok, |b| b.features[t][f].state);
                let new = &now.features[t][f];
                if old == new.state {
                    continue;
                }
                tracing::warn!(
                    model = self.model,
                    version = self.version,
                    variant,
                    input = profile.name,
                    feature = feature.label,
                    from = old.name(),
                    to = new.state.name(),
                    scores = ?new.scores,
                    samples = new.samples,
                    "feature drift state changed"
                );
                events.push(event(Some(Change {
                    input: profile.name.clone(),
                    feature: feature.label.clone(),
                    from: old,
                    to: new.state,
                    samples: new.samples,
                    scores: new.scores.clone(),
                })));
            }
        }
        if model_before != now.state {
            tracing::warn!(
                model = self.model,
                version = self.version,
                variant,
                from = model_before.name(),
                to = now.state.name(),
                drift_share = now.drift_share,
                "model drift state changed"
            );
            events.push(event(None));
        }
    }

    /// Reads the current profile and every variant's state (the API and
    /// the metrics).
    pub fn with_variants<R>(&self, f: impl FnOnce(&Profile, &[Variant]) -> R) -> R {
        let inner = self.inner.lock().unwrap();
        f(&inner.profile, &inner.variants)
    }

    /// The tensors and features this version watches.
    pub fn layout(&self) -> &Profile {
        &self.layout
    }

    /// Whether a judgement is too old to stand for the traffic now.
    pub fn stale(&self, judged: &Judged, now: Instant) -> bool {
        now.saturating_duration_since(judged.closed) > self.settings.window * STALE_WINDOWS
    }
}

/// What a freeze takes: from which version and variant, how far back.
pub struct Freeze<'a> {
    pub source: &'a Monitor,
    /// `None`: every variant of the source.
    pub variant: Option<&'a str>,
    /// The last this many closed windows (default: every one kept)...
    pub windows: Option<usize>,
    /// ...of those that closed in the last this many seconds (default: any).
    pub seconds: Option<f64>,
}

impl Monitor {
    /// Makes live traffic this version's reference: the samples of the
    /// source's closed windows become the profile; this version's windows
    /// and states start over against it. Returns the new reference's name.
    pub fn freeze(&self, from: &Freeze<'_>) -> Result<String, String> {
        let same_layout = |a: &Profile, b: &Profile| {
            a.tensors.len() == b.tensors.len()
                && a.tensors.iter().zip(&b.tensors).all(|(x, y)| {
                    x.name == y.name
                        && x.features.len() == y.features.len()
                        && x.features
                            .iter()
                            .zip(&y.features)
                            .all(|(p, q)| p.label == q.label && p.reference.kind() == q.reference.kind())
                })
        };
        if !same_layout(&self.layout, &from.source.layout) {
            return Err(format!(
                "version {} watches other tensors or features than version {}: its windows cannot be its reference",
                from.source.version, self.version
            ));
        }
        // The profile is built under the source's lock (no copy of its
        // samples); this version's own lock is taken only after, so a
        // version may freeze its own traffic.
        let (profile, source) = {
            let inner = from.source.inner.lock().unwrap();
            if let Some(name) = from.variant
                && !inner.variants.iter().any(|v| v.name.as_deref() == Some(name))
            {
                return Err(format!(
                    "version {} has no window of variant '{name}'",
                    from.source.version
                ));
            }
            let mut kept: Vec<&History> = inner
                .variants
                .iter()
                .filter(|v| from.variant.is_none() || v.name.as_deref() == from.variant)
                .flat_map(|v| v.history.iter())
                .collect();
            kept.sort_by_key(|h| h.closed_at);
            let since = from.seconds.map(|s| SystemTime::now() - Duration::from_secs_f64(s));
            let recent: Vec<&History> = kept
                .iter()
                .copied()
                .filter(|h| since.is_none_or(|t| h.closed_at >= t))
                .collect();
            let skip = from.windows.map_or(0, |n| recent.len().saturating_sub(n));
            let chosen: Vec<&[Vec<Kept>]> = recent[skip..].iter().map(|h| h.kept.as_slice()).collect();
            if chosen.is_empty() {
                return Err(format!(
                    "version {}{} has no closed window to freeze{}",
                    from.source.version,
                    from.variant.map(|v| format!(" (variant '{v}')")).unwrap_or_default(),
                    if kept.is_empty() { " yet" } else { " in that span" }
                ));
            }
            let source = format!(
                "frozen from {} window(s) of version {}{}",
                chosen.len(),
                from.source.version,
                from.variant.map(|v| format!(" variant '{v}'")).unwrap_or_default()
            );
            let profile = crate::profile::frozen(&self.layout, &chosen, self.settings.bins, source.clone())?;
            (profile, source)
        };
        let mut inner = self.inner.lock().unwrap();
        inner.profile = Arc::new(profile);
        inner.variants.clear();
        tracing::info!(
            model = self.model,
            version = self.version,
            reference = source,
            "reference frozen from live traffic"
        );
        Ok(source)
    }
}

/// The samples and counts of a closed window, moved out of it.
fn keep(profile: &Profile, window: Window) -> Vec<Vec<Kept>> {
    profile
        .tensors
        .iter()
        .zip(window.tensors)
        .map(|(t, w)| {
            t.features
                .iter()
                .zip(w.features)
                .map(|(f, fw)| match f.reference {
                    Reference::Numeric(_) => Kept::Values(fw.sample),
                    Reference::Categorical(_) => {
                        let mut counts = fw.counts;
                        counts.pop(); // the unseen column
                        Kept::Counts(counts)
                    }
                })
                .collect()
        })
        .collect()
}

/// The tap a monitored version carries.
pub struct MonitorTap(pub(crate) Arc<Monitor>);

impl Tap for MonitorTap {
    fn observe(&self, exchange: &Exchange<'_>) {
        let m = &self.0;
        if !m.sampled() {
            return;
        }
        if let Some(record) = m.record(exchange) {
            m.observed.fetch_add(1, Relaxed);
            let bytes = record.bytes;
            if !m.jobs.push(record, bytes) {
                m.dropped.fetch_add(1, Relaxed);
            }
            // (`Jobs::push` also counts it process-wide for /metrics.)
        }
    }
}
