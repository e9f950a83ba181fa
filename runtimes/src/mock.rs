//! Runtimes without a model file, for tests and benchmarks of everything above
//! the runtime: `Echo` copies each input to the output of the same position,
//! `Fail` always fails.
use crate::{InputBatch, ModelIo, Runtime, RuntimeError, Tensor};

/// Returns input `i` as output `i`, under the output's name, after
/// `delay` (a slow model, for what happens while requests are in flight).
pub struct Echo {
    io: ModelIo,
    delay: std::time::Duration,
}

impl Echo {
    pub fn new(io: ModelIo) -> Self {
        Echo {
            io,
            delay: std::time::Duration::ZERO,
        }
    }

    pub fn slow(io: ModelIo, delay: std::time::Duration) -> Self {
        Echo { io, delay }
    }
}

impl Runtime for Echo {
    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn run(&mut self, inputs: &[InputBatch<'_>], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        std::thread::sleep(self.delay);
        let all: Vec<Tensor> = self
            .io
            .outputs
            .iter()
            .zip(inputs)
            .map(|(spec, input)| Tensor {
                name: spec.name.clone(),
                datatype: input.datatype,
                shape: input.shape.clone(),
                data: input.parts.concat().into(),
            })
            .collect();
        if outputs.is_empty() {
            return Ok(all);
        }
        outputs
            .iter()
            .map(|name| {
                all.iter()
                    .find(|t| &t.name == name)
                    .cloned()
                    .ok_or_else(|| RuntimeError::Execution(format!("no output named '{name}'")))
            })
            .collect()
    }
}

/// Fails every run with the given message.
pub struct Fail {
    io: ModelIo,
    message: String,
}

impl Fail {
    pub fn new(io: ModelIo, message: impl Into<String>) -> Self {
        Fail {
            io,
            message: message.into(),
        }
    }
}

impl Runtime for Fail {
    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn run(&mut self, _: &[InputBatch<'_>], _: &[String]) -> Result<Vec<Tensor>, RuntimeError> {
        Err(RuntimeError::Execution(self.message.clone()))
    }
}

/// The `mock` backend: `<version>/model.mock` says what each instance does,
/// `echo`, `sleep <milliseconds>` (echo, slowly) or `fail <message>`;
/// inputs and outputs come from config.pbtxt.
/// It shows what a backend is to the engine: this and one registry line.
pub struct MockBackend;

impl crate::Backend for MockBackend {
    fn init(&self, _: &crate::Settings) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn load(&self, request: &crate::LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError> {
        let fail = |e: String| RuntimeError::Load(format!("{}: {e}", request.file.display()));
        let text = std::fs::read_to_string(request.file).map_err(|e| fail(e.to_string()))?;
        if request.declared.inputs.is_empty() {
            return Err(fail(
                "the mock backend takes its inputs and outputs from config.pbtxt".into(),
            ));
        }
        let io = request.declared.clone();
        match text.trim().split_once(' ').unwrap_or((text.trim(), "")) {
            ("echo", _) => Ok(Box::new(Echo::new(io))),
            ("fail", message) => Ok(Box::new(Fail::new(io, message))),
            ("sleep", ms) => {
                let ms: u64 = ms
                    .trim()
                    .parse()
                    .map_err(|_| fail(format!("'sleep {ms}': milliseconds expected")))?;
                Ok(Box::new(Echo::slow(io, std::time::Duration::from_millis(ms))))
            }
            (other, _) => Err(fail(format!(
                "'{other}' is not a mock behaviour (echo, sleep <milliseconds>, fail <message>)"
            ))),
        }
    }
}
