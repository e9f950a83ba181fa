//! A loaded, servable model version, and how it runs one request:
//! validate, queue, await the batch's answer.
use std::sync::Arc;

use quiver_proto::inference::ModelConfig;
use tokio::sync::oneshot;

use super::batcher::{Answer, Job, Scheduler, batch};
use super::classify;
use super::error::{Error, ErrorKind, Result};
use super::provenance::Provenance;
use super::repository::model_config::ModelSpec;
use super::request::{InferRequest, InferResponse, RequestedOutput};
use super::stats::VersionStats;
use super::tap::{StepRun, Taps, Timing, Version};
use super::telemetry::FailureReason;
use super::validate;
use quiver_runtimes::Tensor;

pub struct ModelVersion {
    pub version: u64,
    /// Content hash of the config and the version's files it was loaded
    /// from: a reload keeps this version when the hash has not changed.
    pub fingerprint: u64,
    /// The completed configuration, as the config endpoints report it.
    pub config: Arc<ModelConfig>,
    pub spec: ModelSpec,
    pub stats: Arc<VersionStats>,
    pub scheduler: Scheduler,
    /// Where it came from (URI, registry version, run id, ETags, digest)
    /// and what the validation gate found.
    pub provenance: Provenance,
    /// What watches this version's requests (`tap.rs`): made at load, gone
    /// with the version.
    pub taps: Taps,
    /// Its outputs' labels (`label_filename`), for the classification extension.
    pub labels: classify::Labels,
    /// An ensemble's steps (`ensemble.rs`): then a request runs through the
    /// step models' own queues, and this version's queue stays empty.
    pub composite: Option<Arc<dyn Composite>>,
}

/// A version that runs its requests on other models (an ensemble) instead
/// of on instances of its own.
pub trait Composite: Send + Sync {
    /// Runs a request already checked against the version's spec; `wanted`
    /// names the outputs to answer, in order.
    /// Also returns the runs of its steps, for the tracer (failed ones too).
    fn run<'a>(&'a self, req: InferRequest, wanted: Vec<String>) -> BoxFuture<'a, (Result<Vec<Tensor>>, Vec<StepRun>)>;
    /// Why it cannot serve now (a step's model is unloaded or no longer
    /// fits), or `None` when every step can run.
    fn unavailable(&self) -> Option<String>;
    /// The models it runs, for the dependency loads.
    fn models(&self) -> Vec<String>;
    /// What its answers depend on besides its own config: the versions its
    /// steps resolve to now (the response cache's key holds it, so a step
    /// swapped in never answers from the old step's cache); `None` when a
    /// step cannot run.
    fn identity(&self) -> Option<u64>;
}

/// A boxed future: how a composite's run nests (an ensemble of ensembles
/// is a recursive future).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How a run is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A client's request.
    Client,
    /// Shadow work: run at the lowest CPU priority, never ahead of clients.
    Background,
}

impl ModelVersion {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What the response cache keys this version's answers by: its content
    /// fingerprint, and for an ensemble its steps' as they serve now.
    pub fn identity(&self) -> Option<u64> {
        match &self.composite {
            None => Some(self.fingerprint),
            Some(c) => c.identity().map(|steps| self.fingerprint.rotate_left(17) ^ steps),
        }
    }

    /// Whether its config asks for the response cache.
    pub fn caches(&self) -> bool {
        self.config.response_cache.as_ref().is_some_and(|c| c.enable)
    }

    /// What taps see of this version.
    pub fn view(&self) -> Version<'_> {
        Version {
            name: self.name(),
            version: self.version,
            spec: &self.spec,
            config: &self.config,
            provenance: &self.provenance,
        }
    }

    /// Runs a client's request and counts it in the version's statistics.
    pub async fn infer(&self, req: InferRequest) -> (Result<InferResponse>, Timing) {
        let (result, timing) = self.run(req, Priority::Client).await;
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.kind {
                ErrorKind::Internal => FailureReason::Backend,
                ErrorKind::InvalidArgument | ErrorKind::ResourceExhausted | ErrorKind::DeadlineExceeded => {
                    FailureReason::Rejected
                }
                _ => FailureReason::Other,
            }),
        };
        self.stats.request(outcome, timing.elapsed);
        (result, timing)
    }

    /// Validates, queues and awaits one request, without counting it as a
    /// client's (shadow copies, the validation gate's cases).
    pub async fn run(&self, req: InferRequest, priority: Priority) -> (Result<InferResponse>, Timing) {
        let mut timing = Timing::start();
        let guards = req.guards.clone();
        let result = self
            .queue(req, priority, &mut timing)
            .await
            .and_then(|resp| guards.iter().try_for_each(|g| g.check()).map(|()| resp));
        timing.elapsed = timing.started.elapsed();
        (result, timing)
    }

    /// The outputs asked for with `classification` replaced by their class
    /// results (`classify.rs`); the others as they are.
    fn classified(&self, mut outputs: Vec<Tensor>, asked: &[RequestedOutput]) -> Result<Vec<Tensor>> {
        for o in asked {
            let Some(k) = o.classification.as_ref().and_then(|k| k.as_i64()) else {
                continue;
            };
            if let Some(t) = outputs.iter_mut().find(|t| t.name == o.name) {
                let labels = self.labels.get(&o.name).map(|l| &l[..]);
                *t = classify::classify(t, k as usize, self.spec.max_batch_size > 0, labels).map_err(Error::invalid)?;
            }
        }
        Ok(outputs)
    }

    async fn queue(&self, req: InferRequest, priority: Priority, timing: &mut Timing) -> Result<InferResponse> {
        let outputs = validate::check_request(&self.spec, &req)?;
        if let Some(composite) = &self.composite {
            let id = req.id.clone();
            let (outputs, steps) = composite.run(req, outputs).await;
            timing.steps = steps;
            return Ok(InferResponse {
                model_name: self.name().to_owned(),
                model_version: self.version.to_string(),
                id,
                outputs: outputs?,
            });
        }
        let param = |key: &str| -> Result<Option<i64>> {
            match req.parameters.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| Error::invalid(format!("parameter '{key}' must be an integer"))),
            }
        };
        let (level, timeout) = self
            .scheduler
            .priority_and_timeout(param("priority")?, param("timeout")?)?;
        let batching = self.spec.max_batch_size > 0;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            background: priority == Priority::Background,
            rows: batch::rows(&req.inputs, batching),
            shape_key: batch::shape_key(&req.inputs, batching),
            inputs: req.inputs,
            outputs,
            priority: level,
            timeout,
            enqueued: timing.started,
            reply,
        };
        // Counted before the instance can take it, so the pending gauge
        // never dips below the requests really waiting.
        self.stats.enqueued();
        if let Err(e) = self.scheduler.submit(job) {
            self.stats.refused();
            return Err(e);
        }
        let Answer {
            outputs,
            queued,
            batch_rows,
            execution,
        } = answer
            .await
            .map_err(|_| Error::internal(format!("model '{}' stopped before answering", self.name())))??;
        timing.queued = queued;
        timing.batch_rows = batch_rows;
        timing.execution = execution;
        // One event per request, at debug level: free unless asked for
        // (--log quiver_engine=debug).
        tracing::debug!(
            model = self.name(),
            version = self.version,
            id = %req.id,
            queue_us = queued.as_micros() as u64,
            batch_rows,
            total_us = timing.started.elapsed().as_micros() as u64,
            "answered"
        );
        Ok(InferResponse {
            model_name: self.name().to_owned(),
            model_version: self.version.to_string(),
            id: req.id,
            outputs: self.classified(outputs, &req.outputs)?,
        })
    }
}
