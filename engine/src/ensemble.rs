//! Triton's ensembles (`platform: "ensemble"`, `ensemble_scheduling`): a
//! graph of steps, each a model of the repository, wired by tensor names.
//!
//! Checked once at load against the step models serving then: every name
//! mapped exists, every tensor read has exactly one writer (an ensemble input
//! or one step's output) with the same datatype and a compatible shape, the
//! steps form no cycle, and every step writes something an ensemble output
//! needs. A request then runs each step it needs (only those its outputs
//! need) as soon as the step's inputs exist, so independent branches run at
//! once. Each step is an ordinary request to its model's latest ready
//! version (or the version the step names): it queues and batches with every
//! other request to that model, is counted in that model's statistics, and
//! a hot swap of the model moves the next step requests to the new version
//! without failing one. Tensors move between steps by reference (`Bytes`).
use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;

use quiver_proto::inference::ModelConfig;
use quiver_proto::inference::model_config::SchedulingChoice;
use quiver_runtimes::{DataType, Tensor};

use super::classify;
use super::error::{Error, Result};
use super::live::LiveModels;
use super::load::{self, LoadOptions};
use super::model::{BoxFuture, Composite, ModelVersion};
use super::repository::model_config::{self, ModelSpec};
use super::request::{InferRequest, RequestedOutput};
use super::tap::{Context, Exchange, Kind, StepRun, Timing};

/// Triton's platform name for an ensemble.
pub const PLATFORM: &str = "ensemble";

/// Whether `config` describes an ensemble.
pub fn is_ensemble(config: &ModelConfig) -> bool {
    config.platform == PLATFORM || matches!(config.scheduling_choice, Some(SchedulingChoice::EnsembleScheduling(_)))
}

/// The models an ensemble config names in its steps (for the dependency
/// loads that come before its own).
pub fn step_models(config: &ModelConfig) -> Vec<String> {
    match &config.scheduling_choice {
        Some(SchedulingChoice::EnsembleScheduling(e)) => {
            let mut names: Vec<String> = e.step.iter().map(|s| s.model_name.clone()).collect();
            names.dedup();
            names
        }
        _ => Vec::new(),
    }
}

/// One ensemble tensor: its datatype and full shape (batch dimension
/// included, `-1` where any size goes), and what writes it.
#[derive(Clone, Debug)]
struct TensorInfo {
    name: String,
    datatype: DataType,
    /// Without the batch dimension, as configs declare it.
    dims: Vec<i64>,
    shape: Vec<i64>,
    /// `None`: an ensemble input.
    writer: Option<usize>,
}

struct Step {
    model: String,
    /// `None`: the latest ready version.
    version: Option<String>,
    /// The step model's input name -> ensemble tensor (index).
    inputs: Vec<(String, usize)>,
    /// The step model's output name -> ensemble tensor (index).
    outputs: Vec<(String, usize)>,
    /// Steps whose outputs this one reads.
    after: Vec<usize>,
}

impl Step {
    /// "step 2 (model 'scale')", as messages name it; steps count from 1.
    fn label(&self, i: usize) -> String {
        format!("step {} (model '{}')", i + 1, self.model)
    }
}

pub struct Ensemble {
    name: String,
    steps: Vec<Step>,
    tensors: Vec<TensorInfo>,
    /// The ensemble's inputs, by position in its spec: tensor indices.
    inputs: Vec<usize>,
    /// The ensemble's outputs, by position in its spec: tensor indices.
    outputs: Vec<usize>,
    live: Arc<LiveModels>,
    /// `max_inflight_requests`: requests running at once at most; more are
    /// refused at once (429 / RESOURCE_EXHAUSTED), as a full queue is.
    max_inflight: Option<usize>,
    inflight: std::sync::atomic::AtomicUsize,
}

/// The ensemble config parameter that bounds its requests in flight.
pub const MAX_INFLIGHT_PARAMETER: &str = "max_inflight_requests";

/// A request's place among those in flight, given back when it ends.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `a` and `b` can describe the same tensor: same rank, and every
/// dimension equal or variable (-1) on one side.
fn dims_fit(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| x == y || x == -1 || y == -1)
}

/// Triton's rule for a tensor passed between a writer and a reader: the
/// declared dims fit, or the full shapes (batch dimension included) do, so
/// a non-batching model's `[-1, 4]` meets a batching model's `[4]`.
fn shapes_fit(a: (&[i64], &[i64]), b: (&[i64], &[i64])) -> bool {
    dims_fit(a.0, b.0) || dims_fit(a.1, b.1)
}

impl Ensemble {
    /// Checks `config`'s steps against the models serving now (`spec` is the
    /// ensemble's own, completed from its config).
    fn build(spec: &ModelSpec, config: &ModelConfig, live: Arc<LiveModels>) -> std::result::Result<Ensemble, String> {
        let Some(SchedulingChoice::EnsembleScheduling(scheduling)) = &config.scheduling_choice else {
            return Err("an ensemble needs ensemble_scheduling with its steps".into());
        };
        if scheduling.step.is_empty() {
            return Err("ensemble_scheduling has no step".into());
        }
        let mut tensors: Vec<TensorInfo> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut inputs = Vec::new();
        for io in &spec.inputs {
            index.insert(io.name.clone(), tensors.len());
            inputs.push(tensors.len());
            tensors.push(TensorInfo {
                name: io.name.clone(),
                datatype: io.datatype,
                dims: io.dims.clone(),
                shape: spec.metadata_shape(io),
                writer: None,
            });
        }
        // The step models now, and the tensors their outputs write.
        let mut models = Vec::new();
        let mut steps = Vec::new();
        for (i, s) in scheduling.step.iter().enumerate() {
            let label = format!("step {} (model '{}')", i + 1, s.model_name);
            if s.model_name.is_empty() {
                return Err(format!("step {}: model_name is empty", i + 1));
            }
            if s.model_name == spec.name {
                return Err(format!("{label}: an ensemble cannot run itself"));
            }
            if s.model_version < -1 || s.model_version == 0 {
                return Err(format!(
                    "{label}: model_version is {}; it must be -1 (latest) or a version number",
                    s.model_version
                ));
            }
            let version = (s.model_version > 0).then(|| s.model_version.to_string());
            let model = live
                .resolve(&s.model_name, version.as_deref())
                .map_err(|e| format!("{label}: {}", e.message))?;
            // A model that does not batch may still be a step: then the
            // shapes decide (Triton's rule).
            if model.spec.max_batch_size != 0 && model.spec.max_batch_size < spec.max_batch_size {
                return Err(format!(
                    "{label}: the ensemble allows batches of {} but the model only {}",
                    spec.max_batch_size, model.spec.max_batch_size
                ));
            }
            if s.input_map.is_empty() {
                return Err(format!("{label}: input_map is empty, so the step reads nothing"));
            }
            if s.output_map.is_empty() {
                return Err(format!("{label}: output_map is empty, so the step writes nothing"));
            }
            let mut outputs: Vec<(String, usize)> = Vec::new();
            let mut mapped: Vec<(&String, &String)> = s.output_map.iter().collect();
            mapped.sort();
            for (output, tensor) in mapped {
                let Some(io) = model.spec.outputs.iter().find(|o| &o.name == output) else {
                    return Err(format!(
                        "{label}: output_map names output '{output}', which the model does not have"
                    ));
                };
                if let Some(&t) = index.get(tensor) {
                    let by = match tensors[t].writer {
                        None => "it is an ensemble input".to_owned(),
                        Some(w) => format!("step {} writes it too", w + 1),
                    };
                    return Err(format!("{label}: writes tensor '{tensor}', but {by}"));
                }
                index.insert(tensor.clone(), tensors.len());
                outputs.push((output.clone(), tensors.len()));
                tensors.push(TensorInfo {
                    name: tensor.clone(),
                    datatype: io.datatype,
                    dims: io.dims.clone(),
                    shape: model.spec.metadata_shape(io),
                    writer: Some(i),
                });
            }
            steps.push(Step {
                model: s.model_name.clone(),
                version,
                inputs: Vec::new(),
                outputs,
                after: Vec::new(),
            });
            models.push(model);
        }
        // What each step reads.
        for (i, s) in scheduling.step.iter().enumerate() {
            let label = steps[i].label(i);
            let model = &models[i];
            for (input, tensor) in &s.input_map {
                if !model.spec.inputs.iter().any(|io| &io.name == input) {
                    return Err(format!(
                        "{label}: input_map names input '{input}', which the model does not have"
                    ));
                }
                let Some(&t) = index.get(tensor) else {
                    return Err(format!(
                        "{label}: input '{input}' reads tensor '{tensor}', which is neither an ensemble input nor written by a step"
                    ));
                };
                steps[i].inputs.push((input.clone(), t));
                if let Some(w) = tensors[t].writer
                    && !steps[i].after.contains(&w)
                {
                    steps[i].after.push(w);
                }
            }
            steps[i].inputs.sort();
            check_step(&steps[i], i, &model.spec, &tensors)?;
        }
        let mut outputs = Vec::new();
        for io in &spec.outputs {
            let Some(&t) = index.get(&io.name) else {
                return Err(format!("ensemble output '{}' is written by no step", io.name));
            };
            let info = &tensors[t];
            if info.writer.is_none() {
                return Err(format!(
                    "ensemble output '{}' is an ensemble input; no step writes it",
                    io.name
                ));
            }
            if info.datatype != io.datatype {
                return Err(format!(
                    "ensemble output '{}' is {} in the config, but step {} writes {}",
                    io.name,
                    io.datatype,
                    info.writer.unwrap_or(0) + 1,
                    info.datatype
                ));
            }
            let declared = spec.metadata_shape(io);
            if !shapes_fit((&io.dims, &declared), (&info.dims, &info.shape)) {
                return Err(format!(
                    "ensemble output '{}' has shape {declared:?} in the config, but step {} writes {:?}",
                    io.name,
                    info.writer.unwrap_or(0) + 1,
                    info.shape
                ));
            }
            outputs.push(t);
        }
        check_order(&steps)?;
        let max_inflight = match config.parameters.get(MAX_INFLIGHT_PARAMETER) {
            None => None,
            Some(p) => match p.string_value.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(format!(
                        "parameter '{MAX_INFLIGHT_PARAMETER}' is '{}'; it must be a positive integer",
                        p.string_value
                    ));
                }
            },
        };
        let ensemble = Ensemble {
            name: spec.name.clone(),
            steps,
            tensors,
            inputs,
            outputs,
            live,
            max_inflight,
            inflight: Default::default(),
        };
        let needed = ensemble.needed(&ensemble.outputs);
        if let Some(i) = needed.iter().position(|n| !n) {
            return Err(format!(
                "{}: writes nothing an ensemble output needs",
                ensemble.steps[i].label(i)
            ));
        }
        // Every tensor but the outputs is read by some step (Triton's rule:
        // an input or an intermediate that nothing reads is a wiring slip).
        for (t, info) in ensemble.tensors.iter().enumerate() {
            let read = ensemble.steps.iter().any(|s| s.inputs.iter().any(|&(_, u)| u == t));
            if read || ensemble.outputs.contains(&t) {
                continue;
            }
            return Err(match info.writer {
                None => format!("ensemble input '{}' is read by no step", info.name),
                Some(w) => format!(
                    "{}: writes tensor '{}', which no step reads and which is not an ensemble output",
                    ensemble.steps[w].label(w),
                    info.name
                ),
            });
        }
        Ok(ensemble)
    }

    /// A place for one more request in flight, or the refusal when
    /// `max_inflight_requests` are running.
    fn admit(&self) -> Result<InFlight<'_>> {
        use std::sync::atomic::Ordering::Relaxed;
        let before = self.inflight.fetch_add(1, Relaxed);
        let slot = InFlight(&self.inflight);
        match self.max_inflight {
            Some(max) if before >= max => Err(Error::new(
                crate::error::ErrorKind::ResourceExhausted,
                format!(
                    "ensemble '{}' already runs {max} requests ({MAX_INFLIGHT_PARAMETER})",
                    self.name
                ),
            )),
            _ => Ok(slot),
        }
    }

    /// Which steps the tensors `wanted` need, directly or through others.
    fn needed(&self, wanted: &[usize]) -> Vec<bool> {
        let mut needed = vec![false; self.steps.len()];
        let mut todo: Vec<usize> = wanted.iter().filter_map(|&t| self.tensors[t].writer).collect();
        while let Some(i) = todo.pop() {
            if !std::mem::replace(&mut needed[i], true) {
                todo.extend(&self.steps[i].after);
            }
        }
        needed
    }

    /// A step's model, as the step names it.
    fn step_model(&self, i: usize) -> Result<Arc<ModelVersion>> {
        let step = &self.steps[i];
        self.live
            .resolve(&step.model, step.version.as_deref())
            .map_err(|e| self.step_error(i, e))
    }

    /// An error of step `i`, saying which ensemble, step and model it came from.
    fn step_error(&self, i: usize, e: Error) -> Error {
        Error::new(
            e.kind,
            format!("ensemble '{}' {}: {}", self.name, self.steps[i].label(i), e.message),
        )
    }

    /// Step `i`'s request: its inputs from the ensemble tensors (shared
    /// bytes), and the outputs of its that `wanted_tensor` marks.
    fn step_request(
        &self,
        i: usize,
        req: &InferRequest,
        values: &[Option<Tensor>],
        wanted_tensor: &[bool],
    ) -> InferRequest {
        let step = &self.steps[i];
        let mut inputs = Vec::with_capacity(step.inputs.len());
        // An optional ensemble input the request left out is left out of
        // the step too (its model says whether it may be).
        for (input, t) in &step.inputs {
            if let Some(v) = &values[*t] {
                inputs.push(Tensor {
                    name: input.clone(),
                    datatype: v.datatype,
                    shape: v.shape.clone(),
                    data: v.data.clone(),
                });
            }
        }
        let outputs = step
            .outputs
            .iter()
            .filter(|(_, t)| wanted_tensor[*t])
            .map(|(o, _)| RequestedOutput {
                name: o.clone(),
                ..Default::default()
            })
            .collect();
        InferRequest {
            model_name: step.model.clone(),
            model_version: step.version.clone(),
            id: req.id.clone(),
            parameters: req.parameters.clone(),
            inputs,
            outputs,
            shared_memory: Vec::new(),
            // A step reads the ensemble's inputs where they lie (a shared
            // memory region among them): it answers to the same checks.
            guards: req.guards.clone(),
        }
    }

    /// Runs the steps `wanted` needs; `runs` gets each step's run as it
    /// ends (an error ends the request with the runs so far).
    async fn execute(
        &self,
        mut req: InferRequest,
        wanted: Vec<String>,
        runs: &mut Vec<StepRun>,
    ) -> Result<Vec<Tensor>> {
        let _slot = self.admit()?;
        let position = |name: &str, of: &[usize]| of.iter().copied().find(|&t| self.tensors[t].name == name);
        let wanted: Vec<usize> = wanted
            .iter()
            .map(|w| position(w, &self.outputs).ok_or_else(|| Error::invalid(format!("unknown output '{w}'"))))
            .collect::<Result<_>>()?;
        let needed = self.needed(&wanted);
        // The tensors some needed step reads, or the request asked for.
        let mut wanted_tensor = vec![false; self.tensors.len()];
        for &t in &wanted {
            wanted_tensor[t] = true;
        }
        for (i, s) in self.steps.iter().enumerate() {
            if needed[i] {
                for &(_, t) in &s.inputs {
                    wanted_tensor[t] = true;
                }
            }
        }
        let mut values: Vec<Option<Tensor>> = vec![None; self.tensors.len()];
        for input in std::mem::take(&mut req.inputs) {
            if let Some(t) = position(&input.name, &self.inputs) {
                values[t] = Some(input);
            }
        }
        let mut models: Vec<Option<Arc<ModelVersion>>> = vec![None; self.steps.len()];
        let mut done = vec![false; self.steps.len()];
        let mut started = vec![false; self.steps.len()];
        type Running<'a> = BoxFuture<'a, (usize, Result<crate::request::InferResponse>, Timing)>;
        let mut running: Vec<Running<'_>> = Vec::new();
        loop {
            for i in 0..self.steps.len() {
                if needed[i] && !started[i] && self.steps[i].after.iter().all(|&a| done[a]) {
                    started[i] = true;
                    let model = self.step_model(i).inspect_err(|e| {
                        runs.push(StepRun {
                            step: i,
                            model: self.steps[i].model.clone(),
                            version: 0,
                            timing: Timing::start(),
                            error: Some(e.message.clone()),
                        })
                    })?;
                    let step_req = self.step_request(i, &req, &values, &wanted_tensor);
                    models[i] = Some(Arc::clone(&model));
                    running.push(Box::pin(step_run(i, model, step_req)));
                }
            }
            if running.is_empty() {
                break;
            }
            let (i, result, timing) = next_done(&mut running).await;
            runs.push(StepRun {
                step: i,
                model: self.steps[i].model.clone(),
                version: models[i].as_ref().map_or(0, |m| m.version),
                timing,
                error: result.as_ref().err().map(|e| e.message.clone()),
            });
            let answer = result.map_err(|e| self.step_error(i, e))?;
            for out in answer.outputs {
                if let Some(&(_, t)) = self.steps[i].outputs.iter().find(|(o, _)| *o == out.name) {
                    values[t] = Some(out);
                }
            }
            done[i] = true;
        }
        let mut outputs = Vec::with_capacity(wanted.len());
        for &t in &wanted {
            let info = &self.tensors[t];
            let Some(mut tensor) = values[t].take() else {
                return Err(Error::internal(format!(
                    "ensemble '{}': no step answered output '{}'",
                    self.name, info.name
                )));
            };
            tensor.name.clone_from(&info.name);
            let asked = req.outputs.iter().find(|o| o.name == info.name);
            if let Some(k) = asked.and_then(|o| o.classification.as_ref()).and_then(|k| k.as_i64()) {
                // The labels of the step model that wrote the output, as
                // Triton classifies an ensemble's output.
                let writer = info.writer.unwrap_or(0);
                let model = models[writer].as_ref();
                let step_output = self.steps[writer]
                    .outputs
                    .iter()
                    .find(|&&(_, u)| u == t)
                    .map(|(o, _)| o);
                let labels = model
                    .zip(step_output)
                    .and_then(|(m, o)| m.labels.get(o))
                    .map(|l| &l[..]);
                let batched = model.is_some_and(|m| m.spec.max_batch_size > 0);
                tensor = classify::classify(&tensor, k as usize, batched, labels).map_err(Error::invalid)?;
            }
            outputs.push(tensor);
        }
        Ok(outputs)
    }
}

/// The datatypes and shapes of what step `i` reads and writes against its
/// model's spec (at load, and again when asked whether it can serve: a
/// step model swapped for one with other inputs makes the ensemble
/// unavailable, saying why).
fn check_step(step: &Step, i: usize, model: &ModelSpec, tensors: &[TensorInfo]) -> std::result::Result<(), String> {
    let label = step.label(i);
    for io in &model.inputs {
        let Some((_, t)) = step.inputs.iter().find(|(n, _)| *n == io.name) else {
            if io.optional {
                continue;
            }
            return Err(format!("{label}: the model's input '{}' is not in input_map", io.name));
        };
        let info = &tensors[*t];
        if info.datatype != io.datatype {
            return Err(format!(
                "{label}: input '{}' is {} but tensor '{}' is {}",
                io.name, io.datatype, info.name, info.datatype
            ));
        }
        let shape = model.metadata_shape(io);
        if !shapes_fit((&io.dims, &shape), (&info.dims, &info.shape)) {
            return Err(format!(
                "{label}: input '{}' has shape {shape:?} but tensor '{}' has {:?}",
                io.name, info.name, info.shape
            ));
        }
    }
    for (input, _) in &step.inputs {
        if !model.inputs.iter().any(|io| io.name == *input) {
            return Err(format!("{label}: the model has no input '{input}'"));
        }
    }
    for (output, t) in &step.outputs {
        let Some(io) = model.outputs.iter().find(|io| io.name == *output) else {
            return Err(format!("{label}: the model has no output '{output}'"));
        };
        let info = &tensors[*t];
        let shape = model.metadata_shape(io);
        if io.datatype != info.datatype || !shapes_fit((&io.dims, &shape), (&info.dims, &info.shape)) {
            return Err(format!(
                "{label}: output '{output}' is now {} {:?}, where tensor '{}' was {} {:?}",
                io.datatype,
                model.metadata_shape(io),
                info.name,
                info.datatype,
                info.shape
            ));
        }
    }
    Ok(())
}

/// Refuses steps that wait on each other, naming them.
fn check_order(steps: &[Step]) -> std::result::Result<(), String> {
    let mut done = vec![false; steps.len()];
    loop {
        let mut progressed = false;
        for (i, s) in steps.iter().enumerate() {
            if !done[i] && s.after.iter().all(|&a| done[a]) {
                done[i] = true;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    let stuck: Vec<String> = (0..steps.len())
        .filter(|&i| !done[i])
        .map(|i| steps[i].label(i))
        .collect();
    match stuck.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "the steps form a cycle: {} each wait for another's output",
            stuck.join(", ")
        )),
    }
}

/// Runs step `i`'s request on its model, which counts it; the model's own
/// taps (a monitor, a payload log set on that model) see it as a step.
async fn step_run(
    i: usize,
    model: Arc<ModelVersion>,
    req: InferRequest,
) -> (usize, Result<crate::request::InferResponse>, Timing) {
    if model.taps.is_empty() {
        let (result, timing) = model.infer(req).await;
        return (i, result, timing);
    }
    let context = Context::internal();
    let kept = model.taps.wants_request().then(|| Arc::new(req.kept_copy()));
    model.taps.begin(&model.view(), &context);
    let (result, timing) = model.infer(req).await;
    model.taps.observe(&Exchange {
        kind: Kind::Step,
        model: model.view(),
        variant: None,
        context: &context,
        request: kept.as_ref(),
        result: &result,
        timing: timing.clone(),
    });
    (i, result, timing)
}

/// Awaits whichever running step finishes first and takes it out.
async fn next_done<T>(running: &mut Vec<BoxFuture<'_, T>>) -> T {
    std::future::poll_fn(|cx| {
        for k in 0..running.len() {
            if let Poll::Ready(v) = running[k].as_mut().poll(cx) {
                drop(running.swap_remove(k));
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    })
    .await
}

impl Composite for Ensemble {
    fn run<'a>(&'a self, req: InferRequest, wanted: Vec<String>) -> BoxFuture<'a, (Result<Vec<Tensor>>, Vec<StepRun>)> {
        Box::pin(async move {
            let mut runs = Vec::new();
            let result = self.execute(req, wanted, &mut runs).await;
            (result, runs)
        })
    }

    fn unavailable(&self) -> Option<String> {
        for (i, step) in self.steps.iter().enumerate() {
            match self.live.resolve(&step.model, step.version.as_deref()) {
                Err(e) => return Some(format!("{}: {}", step.label(i), e.message)),
                Ok(m) => {
                    if let Err(why) = check_step(step, i, &m.spec, &self.tensors) {
                        return Some(why);
                    }
                    if let Some(inner) = &m.composite
                        && let Some(why) = inner.unavailable()
                    {
                        return Some(format!("{}: {why}", step.label(i)));
                    }
                }
            }
        }
        None
    }

    fn models(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.model.clone()).collect()
    }

    fn identity(&self) -> Option<u64> {
        let mut identity = 0u64;
        for step in &self.steps {
            let model = self.live.resolve(&step.model, step.version.as_deref()).ok()?;
            let part = model.identity()? ^ model.version.rotate_left(32);
            identity = (identity ^ part).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(23);
        }
        Some(identity)
    }
}

/// Loads one version of an ensemble: its spec from its config, its steps
/// checked against the models serving now. No runtime, no warm-up: its
/// steps' models were warmed when they loaded.
pub fn load_version(
    name: &str,
    version: u64,
    mut config: ModelConfig,
    fingerprint: u64,
    live: &Arc<LiveModels>,
    options: &LoadOptions,
) -> std::result::Result<ModelVersion, String> {
    if config.platform != PLATFORM {
        return Err(format!(
            "ensemble_scheduling needs platform \"{PLATFORM}\" (the config says '{}')",
            config.platform
        ));
    }
    if config.input.is_empty() || config.output.is_empty() {
        return Err("an ensemble's config must declare its inputs and outputs".into());
    }
    // Triton's rules: an ensemble has no instances, optimization or
    // warm-up of its own; its steps' models have theirs.
    if !config.model_warmup.is_empty() {
        return Err("an ensemble cannot have model_warmup; its steps' models are warmed up".into());
    }
    if !config.instance_group.is_empty() {
        return Err("an ensemble cannot have instance_group; its steps run on their models' instances".into());
    }
    if config.optimization.is_some() {
        return Err("an ensemble cannot have optimization; its steps' models have theirs".into());
    }
    let declared = model_config::declared_io(&config)?;
    let spec = model_config::complete(&mut config, name, (PLATFORM, ""), &declared, 0)?;
    let ensemble = Ensemble::build(&spec, &config, Arc::clone(live))?;
    // No instances of its own: its requests run on the steps' queues.
    let mut loaded = load::start_version(name, version, config, spec, Vec::new(), options)?;
    loaded.fingerprint = fingerprint;
    loaded.composite = Some(Arc::new(ensemble));
    Ok(loaded)
}
