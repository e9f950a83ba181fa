# quiver's image: the server built from this tree, ONNX Runtime's library from
# its official wheel, on a slim Debian runtime, as uid 1000. Models are not
# baked in: mount a Triton-layout repository at /models.
#
#   docker build -t quiver .
#   docker run --rm -p 8080:8080 -p 8081:8081 -p 8082:8082 -v "$PWD/models:/models:ro" quiver
#
# GPU variant (ONNX Runtime's CUDA and TensorRT providers; CUDA 13 and cuDNN 9
# from NVIDIA's runtime image; run with --gpus all):
#   docker build -t quiver:gpu --build-arg ORT_PACKAGE=onnxruntime-gpu \
#     --build-arg RUNTIME_IMAGE=docker.io/nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#
# With LibTorch, for TorchScript models (adds about 450 MB; with
# TORCH_CUDA=1 as well, LibTorch's CUDA part for KIND_GPU instances):
#   docker build -t quiver:torch --build-arg WITH_LIBTORCH=1 .
#
# Where base images cannot be pulled, point RUST_IMAGE, PYTHON_IMAGE and
# RUNTIME_IMAGE at local ones (scripts/container-test.sh makes them).
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${PYTHON_IMAGE} AS fetch
ARG ORT_PACKAGE=onnxruntime
ARG ORT_VERSION=1.31.1
ARG WITH_LIBTORCH=0
ARG TORCH_CUDA=0
COPY scripts/fetch-onnxruntime.sh scripts/fetch-libtorch.sh /fetch/scripts/
RUN ORT_PACKAGE=${ORT_PACKAGE} ORT_VERSION=${ORT_VERSION} ORT_DEST=/onnxruntime bash /fetch/scripts/fetch-onnxruntime.sh
# LibTorch from the torch wheel, as scripts/fetch-libtorch.sh takes it
# (into /fetch/.cache/libtorch); an empty folder without it.
RUN mkdir -p /fetch/.cache/libtorch/lib \
 && if [ "$WITH_LIBTORCH" = 1 ]; then TORCH_CUDA=${TORCH_CUDA} bash /fetch/scripts/fetch-libtorch.sh; fi

FROM ${RUST_IMAGE} AS build
ARG WITH_LIBTORCH=0
# The image's own toolchain (1.95), without rustup fetching the components
# rust-toolchain.toml lists for development.
ENV RUSTUP_TOOLCHAIN=1.95.0
# tch compiles a C++ wrapper around LibTorch.
RUN if [ "$WITH_LIBTORCH" = 1 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*; fi
WORKDIR /src
# The workspace alone, so that edits to docs, scripts or the Python suites do
# not rebuild the server.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY proto proto
COPY runtimes runtimes
COPY engine engine
COPY codec codec
COPY monitor monitor
COPY server server
COPY loadtest loadtest
COPY benches benches
RUN mkdir /out && cargo build --release --locked -p quiver-server \
 && strip -o /out/quiver target/release/quiver
# The LibTorch backend library, which quiver loads beside its executable.
COPY --from=fetch /fetch/.cache/libtorch /libtorch
RUN if [ "$WITH_LIBTORCH" = 1 ]; then \
      LIBTORCH=/libtorch cargo build --release --locked -p quiver-torch \
      && strip -o /out/libquiver_torch.so target/release/libquiver_torch.so; \
    fi

FROM ${RUNTIME_IMAGE}
# uid 1000, as Triton's image and Seldon's pods run (NVIDIA's Ubuntu images
# already have a user with that uid).
RUN (getent passwd 1000 > /dev/null || useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin quiver) \
 && mkdir -p /models /opt/quiver/bin /opt/quiver/lib /opt/tritonserver/bin
COPY --from=fetch /onnxruntime/ /opt/quiver/lib/
COPY --from=fetch /fetch/.cache/libtorch/lib/ /opt/quiver/libtorch/lib/
COPY --from=build /out/ /opt/quiver/bin/
# Triton's command lines run unchanged: `tritonserver ...` (KServe's and
# Seldon's manifests) and /opt/tritonserver/bin/tritonserver (Seldon Core 1).
RUN ln -s quiver /opt/quiver/bin/tritonserver \
 && ln -s /opt/quiver/bin/quiver /opt/tritonserver/bin/tritonserver
ENV PATH=/opt/quiver/bin:/opt/tritonserver/bin:$PATH \
    ORT_DYLIB_PATH=/opt/quiver/lib/libonnxruntime.so \
    LIBTORCH=/opt/quiver/libtorch \
    QUIVER_MODEL_REPOSITORY=/models \
    QUIVER_CACHE_DIR=/tmp/quiver-cache \
    XDG_CACHE_HOME=/tmp
USER 1000:1000
WORKDIR /tmp
EXPOSE 8080 8081 8082
# bash's /dev/tcp: no HTTP client needed in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${QUIVER_HTTP_PORT:-8080} && printf 'GET /v2/health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# quiver is PID 1 and handles SIGTERM itself: not ready at once, drain, then
# finish in-flight requests (--shutdown-drain-seconds, --shutdown-grace-seconds).
ENTRYPOINT ["quiver"]
