//! `GRPCInferenceService` on the engine.
use std::pin::Pin;
use std::sync::Arc;

use quiver_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use quiver_proto::inference::model_metadata_response::TensorMetadata as TensorMetadataProto;
use quiver_proto::inference::repository_index_response::ModelIndex;
use quiver_proto::inference::*;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::codec::grpc as codec;
use crate::engine::{EXTENSIONS, Engine, SERVER_NAME, SERVER_VERSION, TensorMetadata};
use crate::error::Error;

pub struct InferenceService {
    engine: Arc<Engine>,
}

impl InferenceService {
    pub fn new(engine: Arc<Engine>) -> Self {
        InferenceService { engine }
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

fn version(v: &str) -> Option<&str> {
    Some(v).filter(|v| !v.is_empty())
}

async fn infer(engine: &Engine, msg: ModelInferRequest) -> Result<ModelInferResponse, Error> {
    let req = codec::decode_request(msg)?;
    Ok(codec::encode_response(engine.infer(req).await?))
}

type StreamResult = Result<ModelStreamInferResponse, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.engine.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
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
        let m = self.engine.model_metadata(&r.name, version(&r.version))?;
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        Ok(Response::new(infer(&self.engine, r.into_inner()).await?))
    }

    type ModelStreamInferStream = Pin<Box<dyn Stream<Item = StreamResult> + Send + 'static>>;

    /// Requests on one stream are answered in order; a failed request is
    /// reported in `error_message` and the stream carries on, as Triton does.
    async fn model_stream_infer(
        &self,
        r: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut incoming = r.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<StreamResult>(16);
        let engine = Arc::clone(&self.engine);
        tokio::spawn(async move {
            loop {
                let msg = match incoming.message().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let answer = match infer(&engine, msg).await {
                    Ok(resp) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(resp),
                    },
                    Err(e) => ModelStreamInferResponse {
                        error_message: e.message,
                        infer_response: None,
                    },
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let config = self.engine.model_config(&r.name, version(&r.version))?;
        Ok(Response::new(ModelConfigResponse {
            config: Some((*config).clone()),
        }))
    }

    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented(
            "the statistics extension is not implemented yet",
        ))
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

    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented(
            "model control (explicit load/unload) is not implemented yet",
        ))
    }

    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented(
            "model control (explicit load/unload) is not implemented yet",
        ))
    }
}
