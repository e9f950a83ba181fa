//! Generates the gRPC types with `protox` (pure Rust), so the build needs no
//! system `protoc`. The encoded descriptor set is kept for server reflection
//! and for parsing `config.pbtxt` against `ModelConfig`.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos");
    let fds = protox::compile(["inference.proto", "model_config.proto"], ["protos"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("inference_descriptor.bin"), fds.encode_to_vec())?;
    // Tensor payloads stay `Bytes`: decoding a request slices the message
    // buffer instead of copying every blob into a Vec.
    const BYTES: [&str; 3] = [
        ".inference.ModelInferRequest.raw_input_contents",
        ".inference.ModelInferResponse.raw_output_contents",
        ".inference.ModelRepositoryParameter.bytes_param",
    ];
    #[cfg(feature = "grpc")]
    BYTES
        .iter()
        .fold(tonic_prost_build::configure(), |c, path| c.bytes(path))
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new().bytes(BYTES).compile_fds(fds)?;
    Ok(())
}
