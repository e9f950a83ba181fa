//! `GRPCInferenceService` on the engine.
use std::pin::Pin;
use std::sync::Arc;

use quiver_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use quiver_proto::inference::model_metadata_response::TensorMetadata as TensorMetadataProto;
use quiver_proto::inference::repository_index_response::ModelIndex;
use quiver_proto::inference::*;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::telemetry;
use quiver_codec::grpc as codec;
use quiver_engine::admission::Ticket;
use quiver_engine::tap::{Context, Headers, Protocol};
use quiver_engine::traffic::VARIANT_HEADER;
use quiver_engine::{EXTENSIONS, Engine, SERVER_NAME, SERVER_VERSION, TensorMetadata};
use std::time::Instant;

pub struct InferenceService {
    engine: Arc<Engine>,
    /// Request tracing: `TraceSetting` reads and changes its settings.
    tracer: Arc<crate::trace::Tracer>,
    /// Turns true when shutdown stops the listeners: open streams end then.
    stopping: watch::Receiver<bool>,
    /// The largest answer, in bytes (`--grpc-max-message-bytes`).
    max_message_bytes: usize,
    /// Registered system shared memory regions.
    shm: Arc<crate::shm::Regions>,
}

impl InferenceService {
    pub fn new(
        engine: Arc<Engine>,
        tracer: Arc<crate::trace::Tracer>,
        stopping: watch::Receiver<bool>,
        max_message_bytes: usize,
        shm: Arc<crate::shm::Regions>,
    ) -> Self {
        InferenceService {
            engine,
            tracer,
            stopping,
            max_message_bytes,
            shm,
        }
    }
}

fn tensors(list: Vec<TensorMetadata>) -> Vec<TensorMetadataProto> {
    list.into_iter()
        .map(|t| TensorMetadataProto {
            name: t.name,
            datatype: t.datatype.as_str().to_owned(),
            shape: t.shape,
        })
        .collect()
}

/// The admission ticket the gRPC layer put in the request's extensions.
fn ticket<T>(r: &Request<T>) -> Option<Arc<Ticket>> {
    r.extensions().get::<Arc<Ticket>>().cloned()
}

/// Records a finished call in the per-protocol metrics and passes its result on.
fn observe<T>(method: &'static str, started: Instant, result: Result<T, Status>) -> Result<T, Status> {
    let code = result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    telemetry::grpc_request(method, code, started.elapsed());
    result
}

fn version(v: &str) -> Option<&str> {
    Some(v).filter(|v| !v.is_empty())
}

async fn infer(
    (engine, shm): (&Engine, &crate::shm::Regions),
    msg: ModelInferRequest,
    (protocol, metadata): (Protocol, &tonic::metadata::MetadataMap),
    max_message_bytes: usize,
) -> Result<(ModelInferResponse, Answered), Error> {
    let mut req = codec::decode_request(msg)?;
    let attached = shm.attach(&mut req).await?;
    let metadata = Metadata(metadata);
    let context = Context::new(protocol, &metadata);
    let route = engine.route(&req.model_name, req.model_version.as_deref(), &context)?;
    let variant = route.variant().map(str::to_owned);
    let mut resp = route.run(req, &context).await?;
    let placed = attached.finish(&mut resp).await?;
    let answered = Answered {
        variant,
        traceparent: context.trace().map(|t| t.traceparent()),
    };
    let sending = Instant::now();
    let resp = codec::encode_response_placed(resp, &placed);
    // Refused here, named, rather than by tonic's encoder (OUT_OF_RANGE in
    // the trailers of an answer already started).
    let size = prost::Message::encoded_len(&resp);
    if size > max_message_bytes {
        return Err(Error::too_large(format!(
            "the answer of model '{}' is {size} bytes, over the limit of {max_message_bytes} bytes \
             (--grpc-max-message-bytes); ask for fewer outputs or send a smaller batch",
            resp.model_name
        )));
    }
    // A traced request's send events: encoded, handed to tonic (which
    // frames and writes it after).
    context.sent(sending);
    Ok((resp, answered))
}

/// What a unary answer's initial metadata carries besides the answer.
struct Answered {
    /// The traffic variant that answered.
    variant: Option<String>,
    /// The request's trace, when it was traced.
    traceparent: Option<String>,
}

/// gRPC metadata as traffic routing reads it.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Headers for Metadata<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

type StreamResult = Result<ModelStreamInferResponse, Status>;

/// Requests one `ModelStreamInfer` stream may have in flight at once.
pub const STREAM_IN_FLIGHT: usize = 128;

/// What a stream answers next, in request order.
enum InFlight {
    Answer(tokio::task::JoinHandle<ModelStreamInferResponse>),
    /// The client's side of the stream failed: end with this status.
    End(Status),
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.engine.is_ready(),
        }))
    }

    async fn model_ready(&self, r: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(ModelReadyResponse {
            ready: self.engine.model_ready(&r.name, version(&r.version)),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: SERVER_VERSION.into(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let m = self
            .engine
            .model_metadata(&r.name, version(&r.version))
            .map_err(crate::error::status)?;
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(&self, r: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        // The request's bytes stay counted until it is answered.
        let _ticket = ticket(&r);
        let (metadata, _, msg) = r.into_parts();
        let result = infer(
            (&self.engine, &self.shm),
            msg,
            (Protocol::Grpc, &metadata),
            self.max_message_bytes,
        )
        .await
        .map(|(resp, answered)| {
            let mut response = Response::new(resp);
            let value = |v: String| tonic::metadata::MetadataValue::try_from(v).ok();
            // The variant that answered, as initial metadata.
            if let Some(v) = answered.variant.and_then(value) {
                response.metadata_mut().insert(VARIANT_HEADER, v);
            }
            if let Some(v) = answered.traceparent.and_then(value) {
                response.metadata_mut().insert("traceparent", v);
            }
            response
        })
        .map_err(crate::error::status);
        observe("ModelInfer", started, result)
    }

    type ModelStreamInferStream = Pin<Box<dyn Stream<Item = StreamResult> + Send + 'static>>;

    /// Requests on one stream run concurrently, up to [`STREAM_IN_FLIGHT`]
    /// at a time, so they batch with each other and with other clients; they
    /// are answered in the order they were sent (Triton's rule for models
    /// that are not decoupled), each with its `id`. A failed request is
    /// reported in `error_message` and the stream carries on, as Triton does.
    async fn model_stream_infer(
        &self,
        r: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let ticket = ticket(&r);
        // Every request on the stream is routed with the stream's metadata.
        let (metadata, _, mut incoming) = r.into_parts();
        let metadata = Arc::new(metadata);
        let (tx, rx) = tokio::sync::mpsc::channel::<StreamResult>(STREAM_IN_FLIGHT);
        // Requests in flight, in the order they came: the bound is the
        // channel's, so a stream that sends faster than it is served waits
        // here (and in HTTP/2 flow control), not in memory.
        let (order, mut answers) = tokio::sync::mpsc::channel::<InFlight>(STREAM_IN_FLIGHT);
        let engine = Arc::clone(&self.engine);
        let shm = Arc::clone(&self.shm);
        let mut stopping = self.stopping.clone();
        // Room for the stream's wrapper around each answer (a tag and a length).
        let limit = self.max_message_bytes.saturating_sub(16);
        tokio::spawn(async move {
            loop {
                // Between requests only: one that was read is answered.
                let next = tokio::select! {
                    next = incoming.message() => next,
                    _ = stopping.wait_for(|s| *s) => break,
                };
                let msg = match next {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = order.send(InFlight::End(status)).await;
                        break;
                    }
                };
                let (engine, metadata, ticket) = (Arc::clone(&engine), Arc::clone(&metadata), ticket.clone());
                let shm = Arc::clone(&shm);
                let answer = tokio::spawn(async move {
                    let started = Instant::now();
                    let size = prost::Message::encoded_len(&msg) + 5;
                    let result = infer((&engine, &shm), msg, (Protocol::GrpcStream, &metadata), limit)
                        .await
                        .map(|(resp, _)| resp);
                    // Answered: its bytes no longer count against the budget.
                    if let Some(t) = &ticket {
                        t.shrink(size);
                    }
                    telemetry::grpc_request(
                        "ModelStreamInfer",
                        result
                            .as_ref()
                            .map_or_else(|e| crate::error::Codes::grpc_code(e.kind), |_| tonic::Code::Ok),
                        started.elapsed(),
                    );
                    match result {
                        Ok(resp) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(resp),
                        },
                        Err(e) => ModelStreamInferResponse {
                            error_message: e.message,
                            infer_response: None,
                        },
                    }
                });
                if order.send(InFlight::Answer(answer)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(next) = answers.recv().await {
                let item = match next {
                    InFlight::Answer(answer) => match answer.await {
                        Ok(a) => Ok(a),
                        // The request's task panicked: say so in its place.
                        Err(_) => Ok(ModelStreamInferResponse {
                            error_message: "internal error while running this request".into(),
                            infer_response: None,
                        }),
                    },
                    InFlight::End(status) => Err(status),
                };
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn model_config(&self, r: Request<ModelConfigRequest>) -> Result<Response<ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let config = self
            .engine
            .model_config(&r.name, version(&r.version))
            .map_err(crate::error::status)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some((*config).clone()),
        }))
    }

    async fn model_statistics(
        &self,
        r: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = r.into_inner();
        let name = Some(r.name.as_str()).filter(|n| !n.is_empty());
        let stats = self
            .engine
            .statistics(name, version(&r.version))
            .map_err(crate::error::status)?;
        let d = |(count, ns): (u64, u64)| Some(StatisticDuration { count, ns });
        let model_stats = stats
            .into_iter()
            .map(|s| ModelStatistics {
                name: s.name,
                version: s.version.to_string(),
                last_inference: s.last_inference_ms,
                inference_count: s.inference_count,
                execution_count: s.execution_count,
                inference_stats: Some(InferStatistics {
                    success: d(s.success),
                    fail: d(s.fail),
                    queue: d(s.queue),
                    compute_input: d(s.compute_input),
                    compute_infer: d(s.compute_infer),
                    compute_output: d(s.compute_output),
                    cache_hit: d(s.cache_hit),
                    cache_miss: d(s.cache_miss),
                }),
                batch_stats: s
                    .batches
                    .iter()
                    .map(|(&batch_size, b)| InferBatchStatistics {
                        batch_size,
                        compute_input: d((b.count, b.input_ns)),
                        compute_infer: d((b.count, b.infer_ns)),
                        compute_output: d((b.count, b.output_ns)),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        r: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let ready_only = r.into_inner().ready;
        let models = self
            .engine
            .repository_index()
            .into_iter()
            .filter(|row| !ready_only || row.state == "READY")
            .map(|row| ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state.into(),
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    /// Answers when the model is READY, or with the reason it failed.
    async fn repository_model_load(
        &self,
        r: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let started = Instant::now();
        let _ticket = ticket(&r);
        let r = r.into_inner();
        let result = async {
            let request = quiver_codec::repository::load_parameters_from_grpc(r.parameters)?;
            self.engine.api_load(&r.model_name, request).await
        }
        .await
        .map(|()| Response::new(RepositoryModelLoadResponse {}))
        .map_err(crate::error::status);
        observe("RepositoryModelLoad", started, result)
    }

    /// Answers once no new request can reach the model; it drains after.
    /// With `unload_dependents`, an ensemble's step models go too.
    async fn repository_model_unload(
        &self,
        r: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let started = Instant::now();
        let r = r.into_inner();
        let engine = &self.engine;
        let result = async {
            let dependents = quiver_codec::repository::unload_dependents_from_grpc(&r.parameters)?;
            engine.api_unload(&r.model_name, dependents).await
        }
        .await
        .map(|()| Response::new(RepositoryModelUnloadResponse {}))
        .map_err(crate::error::status);
        observe("RepositoryModelUnload", started, result)
    }

    async fn log_settings(&self, r: Request<LogSettingsRequest>) -> Result<Response<LogSettingsResponse>, Status> {
        use crate::logging::Value;
        use log_settings_request::setting_value::ParameterChoice as In;
        use log_settings_response::setting_value::ParameterChoice as Out;
        let started = Instant::now();
        let changes = r
            .into_inner()
            .settings
            .into_iter()
            .map(|(name, value)| {
                let value = match value.parameter_choice {
                    Some(In::BoolParam(b)) => Value::Bool(b),
                    Some(In::Uint32Param(n)) => Value::Number(n.into()),
                    Some(In::StringParam(s)) => Value::Text(s),
                    None => return Err(Error::invalid(format!("log setting '{name}': no value"))),
                };
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, Error>>();
        let result = changes
            .and_then(|c| crate::logging::update(&c))
            .map(|settings| {
                let settings = settings
                    .fields()
                    .into_iter()
                    .map(|(name, value)| {
                        let value = match value {
                            Value::Bool(b) => Out::BoolParam(b),
                            // Every number setting is a u32 (the verbose level).
                            Value::Number(n) => Out::Uint32Param(n as u32),
                            Value::Text(s) => Out::StringParam(s),
                        };
                        let value = log_settings_response::SettingValue {
                            parameter_choice: Some(value),
                        };
                        (name.to_owned(), value)
                    })
                    .collect();
                Response::new(LogSettingsResponse { settings })
            })
            .map_err(crate::error::status);
        observe("LogSettings", started, result)
    }

    async fn trace_setting(&self, r: Request<TraceSettingRequest>) -> Result<Response<TraceSettingResponse>, Status> {
        let started = Instant::now();
        let r = r.into_inner();
        let model = Some(r.model_name.as_str()).filter(|m| !m.is_empty());
        // An empty list clears the setting, as tritonclient sends a `None`.
        let changes: Vec<crate::trace::settings::Change> = r
            .settings
            .into_iter()
            .map(|(name, v)| (name, Some(v.value).filter(|v| !v.is_empty())))
            .collect();
        let settings = &self.tracer.settings;
        let result = if changes.is_empty() {
            Ok(())
        } else {
            settings.update(model, &changes).map_err(Error::invalid)
        };
        let result = result
            .map(|()| {
                let settings = settings
                    .report(model)
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), trace_setting_response::SettingValue { value }))
                    .collect();
                Response::new(TraceSettingResponse { settings })
            })
            .map_err(crate::error::status);
        observe("TraceSetting", started, result)
    }
    async fn system_shared_memory_status(
        &self,
        r: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        use system_shared_memory_status_response::RegionStatus;
        let started = Instant::now();
        let name = r.into_inner().name;
        let result = self
            .shm
            .status(Some(name.as_str()).filter(|n| !n.is_empty()))
            .map(|list| {
                let regions = list
                    .into_iter()
                    .map(|s| {
                        let status = RegionStatus {
                            name: s.name.clone(),
                            key: s.key,
                            offset: s.offset,
                            byte_size: s.byte_size,
                        };
                        (s.name, status)
                    })
                    .collect();
                Response::new(SystemSharedMemoryStatusResponse { regions })
            })
            .map_err(crate::error::status);
        observe("SystemSharedMemoryStatus", started, result)
    }

    async fn system_shared_memory_register(
        &self,
        r: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        let started = Instant::now();
        let r = r.into_inner();
        let result = self
            .shm
            .register(&r.name, &r.key, r.offset, r.byte_size)
            .map(|()| Response::new(SystemSharedMemoryRegisterResponse {}))
            .map_err(crate::error::status);
        observe("SystemSharedMemoryRegister", started, result)
    }

    async fn system_shared_memory_unregister(
        &self,
        r: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        let started = Instant::now();
        let name = r.into_inner().name;
        self.shm.unregister(Some(name.as_str()).filter(|n| !n.is_empty()));
        observe(
            "SystemSharedMemoryUnregister",
            started,
            Ok(Response::new(SystemSharedMemoryUnregisterResponse {})),
        )
    }

    async fn cuda_shared_memory_status(
        &self,
        r: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        use cuda_shared_memory_status_response::RegionStatus;
        let started = Instant::now();
        let name = r.into_inner().name;
        let result = self
            .shm
            .cuda_status(Some(name.as_str()).filter(|n| !n.is_empty()))
            .map(|list| {
                let regions = list
                    .into_iter()
                    .map(|s| {
                        let status = RegionStatus {
                            name: s.name.clone(),
                            device_id: s.device_id,
                            byte_size: s.byte_size,
                        };
                        (s.name, status)
                    })
                    .collect();
                Response::new(CudaSharedMemoryStatusResponse { regions })
            })
            .map_err(crate::error::status);
        observe("CudaSharedMemoryStatus", started, result)
    }

    async fn cuda_shared_memory_register(
        &self,
        r: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        let started = Instant::now();
        let r = r.into_inner();
        let result = self
            .shm
            .register_cuda(&r.name, r.raw_handle, r.device_id, r.byte_size)
            .await
            .map(|()| Response::new(CudaSharedMemoryRegisterResponse {}))
            .map_err(crate::error::status);
        observe("CudaSharedMemoryRegister", started, result)
    }

    async fn cuda_shared_memory_unregister(
        &self,
        r: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        let started = Instant::now();
        let name = r.into_inner().name;
        self.shm.unregister_cuda(Some(name.as_str()).filter(|n| !n.is_empty()));
        observe(
            "CudaSharedMemoryUnregister",
            started,
            Ok(Response::new(CudaSharedMemoryUnregisterResponse {})),
        )
    }
}
