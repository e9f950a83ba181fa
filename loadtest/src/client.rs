//! One request, sent: the three wire formats behind one enum so the load
//! loops do not care which they drive.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::transport::Channel;

/// Why a request failed, for the error table.
pub type ErrorKind = String;

#[derive(Clone)]
pub enum Sender {
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        url: String,
        body: Bytes,
        header_len: Option<usize>,
    },
    Grpc {
        client: GrpcInferenceServiceClient<Channel>,
        request: ModelInferRequest,
    },
    /// `ServerLive`: the same gRPC stack with no inference, the transport's floor.
    GrpcLive {
        client: GrpcInferenceServiceClient<Channel>,
    },
}

impl Sender {
    pub fn http(url: String, body: Bytes, header_len: Option<usize>) -> Sender {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        Sender::Http {
            client,
            url,
            body,
            header_len,
        }
    }

    pub async fn grpc(address: &str, request: ModelInferRequest) -> anyhow::Result<Sender> {
        let channel = Channel::from_shared(address.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let client = GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX);
        Ok(Sender::Grpc { client, request })
    }

    pub fn into_live(self) -> Sender {
        match self {
            Sender::Grpc { client, .. } => Sender::GrpcLive { client },
            other => other,
        }
    }

    /// Sends the request once; `Err` carries the kind of failure.
    pub async fn send(&mut self) -> Result<(), ErrorKind> {
        match self {
            Sender::Http {
                client,
                url,
                body,
                header_len,
            } => {
                let mut req = hyper::Request::post(url.as_str()).header("content-type", "application/json");
                if let Some(n) = header_len {
                    req = req.header("inference-header-content-length", *n);
                }
                let req = req.body(Full::new(body.clone())).map_err(|e| format!("request: {e}"))?;
                let resp = client.request(req).await.map_err(|e| format!("transport: {e}"))?;
                let status = resp.status();
                // Read the whole body: the server's work is not done until it is sent.
                resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", status.as_u16()))
                }
            }
            Sender::Grpc { client, request } => match client.model_infer(request.clone()).await {
                Ok(_) => Ok(()),
                Err(s) => Err(format!("gRPC {:?}", s.code())),
            },
            Sender::GrpcLive { client } => {
                match client.server_live(quiver_proto::inference::ServerLiveRequest {}).await {
                    Ok(_) => Ok(()),
                    Err(s) => Err(format!("gRPC {:?}", s.code())),
                }
            }
        }
    }
}
