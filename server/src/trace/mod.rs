//! Request tracing (docs/observability.md): Triton's trace settings and
//! `--trace-config`, W3C trace context, OpenTelemetry spans over OTLP/HTTP
//! and Triton's JSON trace file.
//!
//! The tracer is a tap (`quiver_engine::tap`). Before a request runs it
//! decides (one atomic count of the model's setting) and marks the context;
//! after the answer is ready it records the times the engine took anyway
//! (queue wait, the execution's phases, which execution it was), and the
//! front end adds its send times when the answer is handed over. A traced
//! request costs that record (ids, names, a dozen times) on a bounded
//! queue. Spans are built and sent on the exporter's own thread; a full
//! queue drops the trace and counts it.
pub mod export;
pub mod otlp;
pub mod record;
pub mod settings;

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_engine::tap::{Context, Exchange, Kind, Load, StepRun, Tap, TraceIds, Version};

pub use record::{Item, LoadRecord, ProtocolNames, Record, StepRecord, StepSpan, Times};
pub use settings::{Config, Mode, Otel, Settings, Values};

/// The tracer: the tap, the settings the trace extension changes, and the
/// queue to the exporter.
pub struct Tracer {
    pub settings: Settings,
    exporter: Arc<export::Exporter>,
    /// A clock pair to turn `Instant`s into Unix time.
    epoch: (Instant, u64),
    numbers: std::sync::atomic::AtomicU64,
}

impl Tracer {
    /// Starts the exporter's thread when tracing can ever be turned on in
    /// this mode (the settings change at run time, so it always can).
    pub fn new(config: Config) -> std::io::Result<Arc<Tracer>> {
        let exporter = export::Exporter::start(&config, random_bytes())?;
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(Arc::new(Tracer {
            settings: Settings::new(config.mode, config.values),
            exporter: Arc::new(exporter),
            epoch: (Instant::now(), unix.as_nanos() as u64),
            numbers: std::sync::atomic::AtomicU64::new(1),
        }))
    }

    fn unix(&self, t: Instant) -> u64 {
        unix(self.epoch, t)
    }

    /// Sends what is queued, within `grace`.
    pub async fn close(&self, grace: Duration) {
        self.exporter.close(grace).await;
    }
}

impl Tap for Tracer {
    /// Decides (one count of the model's setting) and marks the context.
    fn begin(&self, model: &Version<'_>, context: &Context<'_>) {
        // Triton honours a client's trace context in OpenTelemetry mode;
        // the header is looked up only when the model's tracing is on.
        let mut parent = None;
        let traced = self.settings.sample(model.name, || {
            parent = match self.settings.mode {
                Mode::OpenTelemetry => context.header("traceparent").and_then(parse_traceparent),
                Mode::Triton => None,
            };
            parent.is_some()
        });
        if traced {
            context.set_trace(TraceIds {
                trace_id: parent.map_or_else(random_bytes, |(trace, _)| trace),
                span_id: random_bytes(),
            });
        }
    }

    /// A traced request's record, with the times the engine took.
    fn observe(&self, x: &Exchange<'_>) {
        let context = x.context;
        let Some(&ids) = context.trace() else {
            return;
        };
        let now = Instant::now();
        let timing = &x.timing;
        let started = self.unix(timing.started);
        let compute_start = if timing.execution.id == 0 {
            started
        } else {
            started + timing.queued.as_nanos() as u64
        };
        let parent = match self.settings.mode {
            Mode::OpenTelemetry => context.header("traceparent").and_then(parse_traceparent),
            Mode::Triton => None,
        };
        let trace_state = match parent {
            Some(_) => context.header("tracestate").unwrap_or_default().to_owned(),
            None => String::new(),
        };
        let (request_id, error) = match x.result {
            Ok(r) => (r.id.clone(), None),
            Err(e) => (
                x.request.map(|r| r.id.clone()).unwrap_or_default(),
                Some(e.message.clone()),
            ),
        };
        let model_span = random_bytes();
        let mut steps = Vec::new();
        let number = self.numbers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.step_spans(&timing.steps, (model_span, number), &mut steps);
        let record = Record {
            steps,
            ids,
            parent: parent.map(|(_, span)| span),
            trace_state,
            model_span,
            compute_span: random_bytes(),
            number,
            model: x.model.name.to_owned(),
            version: x.model.version,
            request_id,
            protocol: context.protocol,
            variant: x.variant.map(str::to_owned),
            shadow: x.kind == Kind::Shadow,
            error,
            execution: timing.execution,
            batch_rows: timing.batch_rows,
            log_frequency: match self.settings.mode {
                Mode::Triton => self.settings.for_model(x.model.name).values.log_frequency,
                Mode::OpenTelemetry => 0,
            },
            times: Times {
                received: self.unix(context.received.min(timing.started)),
                started,
                compute_start,
                answered: started + timing.elapsed.as_nanos() as u64,
                end: self.unix(now),
                sent: None,
            },
        };
        // Joins the log to the trace (at debug: free unless asked for).
        tracing::debug!(
            trace_id = %ids.trace_hex(),
            span_id = %ids.span_hex(),
            model = x.model.name,
            "traced request"
        );
        // Sent when the front end has sent the answer (its send events), or
        // when the request's context goes without that.
        let (exporter, epoch) = (Arc::clone(&self.exporter), self.epoch);
        let mut record = record;
        context.after_send(move |sent| {
            record.times.sent = sent.map(|(start, end)| (unix(epoch, start), unix(epoch, end)));
            exporter.push(Item::Request(record));
        });
    }

    fn wants_request(&self) -> bool {
        false
    }

    /// Loads are rare: every one is traced while the model's level is on
    /// (in OpenTelemetry mode; Triton's trace file has no place for them).
    /// A reload that changed nothing (only the switch) is not.
    fn load(&self, load: &Load<'_>) {
        if self.settings.mode != Mode::OpenTelemetry || !self.settings.for_model(load.model).values.timestamps {
            return;
        }
        if load.error.is_none() && load.steps.iter().all(|s| s.name == "switch") {
            return;
        }
        let steps = load
            .steps
            .iter()
            .map(|s| StepRecord {
                span_id: random_bytes(),
                name: s.name,
                version: s.version,
                start: self.unix(s.start),
                end: self.unix(s.end),
                error: s.error.clone(),
            })
            .collect();
        self.exporter.push(Item::Load(LoadRecord {
            trace_id: random_bytes(),
            span_id: random_bytes(),
            model: load.model.to_owned(),
            error: load.error.map(str::to_owned),
            steps,
        }));
    }
}

impl Tracer {
    /// An ensemble request's steps as spans under `parent`; the steps of a
    /// step that is itself an ensemble under that step's span.
    fn step_spans(&self, runs: &[StepRun], (parent, parent_number): ([u8; 8], u64), out: &mut Vec<StepSpan>) {
        for run in runs {
            let t = &run.timing;
            let started = self.unix(t.started);
            let span_id = random_bytes();
            let number = self.numbers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            out.push(StepSpan {
                span_id,
                compute_span: random_bytes(),
                parent,
                number,
                parent_number,
                step: run.step,
                model: run.model.clone(),
                version: run.version,
                started,
                compute_start: match t.execution.id {
                    0 => started,
                    _ => started + t.queued.as_nanos() as u64,
                },
                answered: started + t.elapsed.as_nanos() as u64,
                execution: t.execution,
                batch_rows: t.batch_rows,
                error: run.error.clone(),
            });
            self.step_spans(&t.steps, (span_id, number), out);
        }
    }
}

/// `t` in Unix nanoseconds, by a clock pair taken together.
fn unix((base, unix): (Instant, u64), t: Instant) -> u64 {
    match t.checked_duration_since(base) {
        Some(d) => unix + d.as_nanos() as u64,
        None => unix.saturating_sub(base.duration_since(t).as_nanos() as u64),
    }
}

/// A W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`): the trace id
/// and the parent's span id; `None` for anything malformed or all zero.
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || flags.len() != 2 || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let mut t = [0u8; 16];
    let mut s = [0u8; 8];
    unhex(trace, &mut t)?;
    unhex(span, &mut s)?;
    u8::from_str_radix(version, 16).ok()?;
    u8::from_str_radix(flags, 16).ok()?;
    (t != [0; 16] && s != [0; 8]).then_some((t, s))
}

fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random ids from a per-thread xorshift seeded by the process's hasher
/// keys: unique enough for trace and span ids, no lock, no system call.
fn random_bytes<const N: usize>() -> [u8; N] {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id().into());
            h.finish() | 1
        });
    }
    let mut out = [0u8; N];
    STATE.with(|s| {
        for chunk in out.chunks_mut(8) {
            let mut x = s.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_as_w3c_says() {
        let (t, s) = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s), "00f067aa0ba902b7");
        let ids = TraceIds {
            trace_id: t,
            span_id: s,
        };
        assert_eq!(
            ids.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may add fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
    }

    #[test]
    fn ids_differ() {
        let a: [u8; 16] = random_bytes();
        let b: [u8; 16] = random_bytes();
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
    }
}
