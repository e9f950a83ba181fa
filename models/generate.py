#!/usr/bin/env python3
"""Builds the demo model repository and its golden inputs/outputs.

Every model is written with the `onnx` helper API from fixed seeds, so running
this again produces the same files. Expected outputs are computed here with
numpy, independently of ONNX Runtime, and saved in `golden.json`; the test
suites send the golden inputs through quiver and compare.

    python3 models/generate.py            # rewrites models/*
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def save(model_name, graph, config=None, version="1", opset=17):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="quiver-models")
    model.ir_version = 8 if opset < 19 else 9
    onnx.checker.check_model(model)
    d = os.path.join(HERE, model_name, version)
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    cfg = os.path.join(HERE, model_name, "config.pbtxt")
    if config is not None:
        with open(cfg, "w") as f:
            f.write(config.strip() + "\n")
    elif os.path.exists(cfg):
        os.remove(cfg)


def tensor(name, datatype, array):
    """A golden tensor: flat row-major data plus its shape."""
    a = np.asarray(array)
    if datatype == "BYTES":
        data = [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]
    elif datatype == "BOOL":
        data = [bool(x) for x in a.reshape(-1)]
    else:
        data = a.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(a.shape), "data": data}


golden = {}

# add_sub: Triton's classic example, with a batch dimension.
a = helper.make_tensor_value_info("INPUT0", TensorProto.INT32, ["batch", 16])
b = helper.make_tensor_value_info("INPUT1", TensorProto.INT32, ["batch", 16])
s = helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, ["batch", 16])
d = helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, ["batch", 16])
graph = helper.make_graph(
    [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
     helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
    "add_sub", [a, b], [s, d])
save("add_sub", graph, """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
""")
x0 = np.arange(32, dtype=np.int32).reshape(2, 16)
x1 = np.full((2, 16), 7, dtype=np.int32) - np.arange(32, dtype=np.int32).reshape(2, 16) % 5
golden["add_sub"] = {
    "inputs": [tensor("INPUT0", "INT32", x0), tensor("INPUT1", "INT32", x1)],
    "outputs": [tensor("OUTPUT0", "INT32", x0 + x1), tensor("OUTPUT1", "INT32", x0 - x1)],
}

# fraud_mlp: a tabular classifier, 32 features -> 64 hidden (ReLU) -> 2 classes (softmax).
rng = np.random.default_rng(20261127)
w1 = (rng.standard_normal((32, 64)) / np.sqrt(32)).astype(np.float32)
b1 = (rng.standard_normal(64) * 0.1).astype(np.float32)
w2 = (rng.standard_normal((64, 2)) / np.sqrt(64)).astype(np.float32)
b2 = (rng.standard_normal(2) * 0.1).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"]),
     helper.make_node("Relu", ["h"], ["hr"]),
     helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
     helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
    "fraud_mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 32])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
    initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
                 numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
save("fraud_mlp", graph, """
name: "fraud_mlp"
backend: "onnxruntime"
max_batch_size: 64
input [ { name: "input" data_type: TYPE_FP32 dims: [ 32 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 16, 32 ]
  max_queue_delay_microseconds: 200
}
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
""")
xf = rng.standard_normal((3, 32)).astype(np.float32)
h = np.maximum(xf @ w1 + b1, 0)
logits = h @ w2 + b2
e = np.exp(logits - logits.max(axis=1, keepdims=True))
golden["fraud_mlp"] = {
    "inputs": [tensor("input", "FP32", xf)],
    "outputs": [tensor("probabilities", "FP32", e / e.sum(axis=1, keepdims=True))],
}

# text_greet: BYTES in, BYTES out (ONNX string tensors), no batch dimension.
# StringConcat (opset 20) prefixes each element; it needs no locale, unlike
# StringNormalizer, so the model runs on any machine.
graph = helper.make_graph(
    [helper.make_node("StringConcat", ["prefix", "name"], ["greeting"])],
    "text_greet",
    [helper.make_tensor_value_info("name", TensorProto.STRING, ["n"])],
    [helper.make_tensor_value_info("greeting", TensorProto.STRING, ["n"])],
    initializer=[numpy_helper.from_array(np.array(["Hello, "], dtype=object), "prefix")])
save("text_greet", graph, """
name: "text_greet"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "name" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "greeting" data_type: TYPE_STRING dims: [ -1 ] } ]
""", opset=20)
names = np.array(["quiver", "Triton", "ONNX models", "\u00fc-umlaut"], dtype=object)
golden["text_greet"] = {
    "inputs": [tensor("name", "BYTES", names)],
    "outputs": [tensor("greeting", "BYTES", np.array(["Hello, " + w for w in names], dtype=object))],
}

# fp16_scale: FP16 in and out; y = 2x + 1 computed in float32 inside the graph.
graph = helper.make_graph(
    [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
     helper.make_node("Mul", ["xf", "two"], ["m"]),
     helper.make_node("Add", ["m", "one"], ["yf"]),
     helper.make_node("Cast", ["yf"], ["y"], to=TensorProto.FLOAT16)],
    "fp16_scale",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 8])],
    initializer=[numpy_helper.from_array(np.array(2, np.float32), "two"),
                 numpy_helper.from_array(np.array(1, np.float32), "one")])
save("fp16_scale", graph, """
name: "fp16_scale"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP16 dims: [ 8 ] } ]
output [ { name: "y" data_type: TYPE_FP16 dims: [ 8 ] } ]
""")
xh = (np.arange(16, dtype=np.float32).reshape(2, 8) / 4 - 1.5).astype(np.float16)
golden["fp16_scale"] = {
    "inputs": [tensor("x", "FP16", xh.astype(np.float32))],
    "outputs": [tensor("y", "FP16", (xh.astype(np.float32) * 2 + 1).astype(np.float16).astype(np.float32))],
}

# all_types: one Identity per V2 datatype but BF16 (see bf16_double), so every
# datatype can be checked end to end over every encoding.
TYPES = [
    ("BOOL", TensorProto.BOOL, "TYPE_BOOL", [True, False, True, True]),
    ("UINT8", TensorProto.UINT8, "TYPE_UINT8", [0, 1, 128, 255]),
    ("UINT16", TensorProto.UINT16, "TYPE_UINT16", [0, 1, 300, 65535]),
    ("UINT32", TensorProto.UINT32, "TYPE_UINT32", [0, 1, 70000, 4294967295]),
    ("UINT64", TensorProto.UINT64, "TYPE_UINT64", [0, 1, 2**40, 2**64 - 1]),
    ("INT8", TensorProto.INT8, "TYPE_INT8", [-128, -1, 0, 127]),
    ("INT16", TensorProto.INT16, "TYPE_INT16", [-32768, -1, 0, 32767]),
    ("INT32", TensorProto.INT32, "TYPE_INT32", [-2**31, -1, 0, 2**31 - 1]),
    ("INT64", TensorProto.INT64, "TYPE_INT64", [-2**63, -1, 0, 2**63 - 1]),
    ("FP16", TensorProto.FLOAT16, "TYPE_FP16", [-2.5, 0.0, 0.125, 1024.0]),
    ("FP32", TensorProto.FLOAT, "TYPE_FP32", [-1.5, 0.0, 3.25, 1e20]),
    ("FP64", TensorProto.DOUBLE, "TYPE_FP64", [-1.5, 0.0, 3.141592653589793, 1e300]),
    ("BYTES", TensorProto.STRING, "TYPE_STRING", ["a", "", "quiver", "binary\u00e9"]),
]
nodes, ins, outs, cin, cout, gin, gout = [], [], [], [], [], [], []
for v2, onnx_ty, cfg_ty, values in TYPES:
    nodes.append(helper.make_node("Identity", [f"IN_{v2}"], [f"OUT_{v2}"]))
    ins.append(helper.make_tensor_value_info(f"IN_{v2}", onnx_ty, ["batch", 4]))
    outs.append(helper.make_tensor_value_info(f"OUT_{v2}", onnx_ty, ["batch", 4]))
    cin.append(f'  {{ name: "IN_{v2}" data_type: {cfg_ty} dims: [ 4 ] }}')
    cout.append(f'  {{ name: "OUT_{v2}" data_type: {cfg_ty} dims: [ 4 ] }}')
    data = {"name": None, "datatype": v2, "shape": [1, 4], "data": values}
    gin.append(dict(data, name=f"IN_{v2}"))
    gout.append(dict(data, name=f"OUT_{v2}"))
graph = helper.make_graph(nodes, "all_types", ins, outs)
save("all_types", graph, 'name: "all_types"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
     + "input [\n" + ",\n".join(cin) + "\n]\noutput [\n" + ",\n".join(cout) + "\n]\n")
golden["all_types"] = {"inputs": gin, "outputs": gout}

# bf16_double: BF16 in and out, y = 2x computed in float32. A model of its own
# because the KServe SDK has no BF16 dtype and cannot send it over gRPC.
graph = helper.make_graph(
    [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
     helper.make_node("Mul", ["xf", "two"], ["yf"]),
     helper.make_node("Cast", ["yf"], ["y"], to=TensorProto.BFLOAT16)],
    "bf16_double",
    [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["batch", 4])],
    [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 4])],
    initializer=[numpy_helper.from_array(np.array(2, np.float32), "two")])
save("bf16_double", graph, """
name: "bf16_double"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_BF16 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_BF16 dims: [ 4 ] } ]
""")
xb = [-2.0, 0.0, 0.5, 384.0]  # exactly representable in bfloat16, and so are their doubles
golden["bf16_double"] = {
    "inputs": [{"name": "x", "datatype": "BF16", "shape": [1, 4], "data": xb}],
    "outputs": [{"name": "y", "datatype": "BF16", "shape": [1, 4], "data": [2 * v for v in xb]}],
}

# conv_net: a compute-heavy image classifier (~5 ms per 64x64 image on one
# core): three 3x3 convolutions with ReLU, global average pooling, a linear
# layer and softmax. For throughput benchmarks, where compute dominates.
CONV_C = 64
crng = np.random.default_rng(64)  # its own stream: the models after it stay as they were
convs, inits, prev, ch = [], [], "image", 3
for i in range(3):
    w = (crng.standard_normal((CONV_C, ch, 3, 3)) / np.sqrt(ch * 9)).astype(np.float32)
    b = (crng.standard_normal(CONV_C) * 0.05).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"conv{i}_w"), numpy_helper.from_array(b, f"conv{i}_b")]
    convs += [helper.make_node("Conv", [prev, f"conv{i}_w", f"conv{i}_b"], [f"c{i}"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
    prev, ch = f"r{i}", CONV_C
wf = (crng.standard_normal((CONV_C, 10)) / np.sqrt(CONV_C)).astype(np.float32)
bf = (crng.standard_normal(10) * 0.1).astype(np.float32)
inits += [numpy_helper.from_array(wf, "fc_w"), numpy_helper.from_array(bf, "fc_b")]
graph = helper.make_graph(
    convs + [helper.make_node("GlobalAveragePool", [prev], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
    "conv_net",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
    initializer=inits)
save("conv_net", graph, """
name: "conv_net"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
""")


def conv2d(x, w, b):
    n, c, hgt, wid = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + hgt, j:j + wid] for i in range(3) for j in range(3)], axis=2)
    # cols: n, c, 9, h, w ; w: o, c, 3, 3
    return np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], w.shape[1], 9)) + b[None, :, None, None]


def conv_net_probabilities(image):
    """conv_net's forward pass in float64 numpy: its softmax probabilities."""
    h = image.astype(np.float64)
    for i in range(3):
        w = numpy_helper.to_array(inits[2 * i]).astype(np.float64)
        b = numpy_helper.to_array(inits[2 * i + 1]).astype(np.float64)
        h = np.maximum(conv2d(h, w, b), 0)
    logits = h.mean(axis=(2, 3)) @ wf.astype(np.float64) + bf
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


xc = (crng.standard_normal((1, 3, 64, 64)) * 0.5).astype(np.float32)
golden["conv_net"] = {
    "inputs": [tensor("image", "FP32", xc)],
    "outputs": [tensor("probabilities", "FP32", conv_net_probabilities(xc).astype(np.float32))],
}

# linear_noconfig: no config.pbtxt at all; quiver completes it from the model
# (inputs, outputs, dims, and a batch dimension from the symbolic dim 0).
wl = rng.standard_normal((4, 3)).astype(np.float32)
bl = rng.standard_normal(3).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
    "linear_noconfig",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    initializer=[numpy_helper.from_array(wl, "w"), numpy_helper.from_array(bl, "b")])
save("linear_noconfig", graph, None)
xl = rng.standard_normal((2, 4)).astype(np.float32)
golden["linear_noconfig"] = {
    "inputs": [tensor("x", "FP32", xl)],
    "outputs": [tensor("y", "FP32", xl @ wl + bl)],
}

# tanh_nameonly: a config.pbtxt holding only the name, as Seldon Core 2 writes it.
graph = helper.make_graph(
    [helper.make_node("Tanh", ["x"], ["y"])], "tanh_nameonly",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])])
save("tanh_nameonly", graph, 'name: "tanh_nameonly"')
xt = np.linspace(-3, 3, 12, dtype=np.float32).reshape(2, 6)
golden["tanh_nameonly"] = {
    "inputs": [tensor("x", "FP32", xt)],
    "outputs": [tensor("y", "FP32", np.tanh(xt))],
}

# TorchScript twins: the same models for the LibTorch backend (platform
# pytorch_libtorch), from the same weights, with the same tensor names, so one
# golden request serves both. Skipped: text_greet (LibTorch tensors hold no
# strings), linear_noconfig and tanh_nameonly (a TorchScript file does not
# describe its inputs and outputs, so a config cannot be left out). all_types_pt
# has the datatypes LibTorch shares with the protocol. Writing the .pt files
# needs torch (pip install torch==2.11.0); without it the golden entries are
# still written and the committed .pt files stay.
TWIN_TYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


def twin_config(onnx_model, twin, naming='platform: "pytorch_libtorch"'):
    with open(os.path.join(HERE, onnx_model, "config.pbtxt")) as f:
        text = f.read()
    text = text.replace(f'name: "{onnx_model}"', f'name: "{twin}"')
    text = text.replace('platform: "onnxruntime_onnx"', naming).replace('backend: "onnxruntime"', naming)
    if onnx_model == "all_types":
        keep = lambda line: not any(f"_{t} " in line or f"_{t}\"" in line for t in ("UINT16", "UINT32", "UINT64", "BYTES"))
        text = "\n".join(line for line in text.splitlines() if keep(line)) + "\n"
        text = text.replace("},\n]", "}\n]")
    return text


twins = {"add_sub": "add_sub_pt", "fraud_mlp": "fraud_mlp_pt", "fp16_scale": "fp16_scale_pt",
         "bf16_double": "bf16_double_pt", "conv_net": "conv_net_pt", "all_types": "all_types_pt"}
for onnx_model, twin in twins.items():
    entry = json.loads(json.dumps(golden[onnx_model]))
    if onnx_model == "all_types":
        for side in ("inputs", "outputs"):
            entry[side] = [t for t in entry[side] if t["datatype"] in TWIN_TYPES]
    golden[twin] = entry

try:
    import torch
    from typing import Dict, Tuple
except ImportError:
    torch = None
    print("torch is not installed: the TorchScript twins (*_pt/1/model.pt) were not rewritten")

if torch is not None:
    torch.manual_seed(0)
    T = torch.Tensor

    class AddSub(torch.nn.Module):
        """Several inputs, a tuple out."""
        def forward(self, INPUT0: T, INPUT1: T) -> Tuple[T, T]:
            return INPUT0 + INPUT1, INPUT0 - INPUT1

    class FraudMlp(torch.nn.Module):
        """A dict out, keyed by output name."""
        def __init__(self):
            super().__init__()
            for name, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
                self.register_buffer(name, torch.from_numpy(value.copy()))

        def forward(self, input: T) -> Dict[str, T]:
            h = torch.relu(input @ self.w1 + self.b1)
            return {"probabilities": torch.softmax(h @ self.w2 + self.b2, dim=1)}

    class Fp16Scale(torch.nn.Module):
        def forward(self, x: T) -> T:
            return (x.float() * 2 + 1).half()

    class Bf16Double(torch.nn.Module):
        def forward(self, x: T) -> T:
            return (x.float() * 2).to(torch.bfloat16)

    class ConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i in range(3):
                self.register_buffer(f"w{i}", torch.from_numpy(numpy_helper.to_array(inits[2 * i]).copy()))
                self.register_buffer(f"b{i}", torch.from_numpy(numpy_helper.to_array(inits[2 * i + 1]).copy()))
            self.register_buffer("fc_w", torch.from_numpy(wf.copy()))
            self.register_buffer("fc_b", torch.from_numpy(bf.copy()))

        def forward(self, image: T) -> T:
            h = torch.relu(torch.nn.functional.conv2d(image, self.w0, self.b0, padding=1))
            h = torch.relu(torch.nn.functional.conv2d(h, self.w1, self.b1, padding=1))
            h = torch.relu(torch.nn.functional.conv2d(h, self.w2, self.b2, padding=1))
            return torch.softmax(h.mean(dim=(2, 3)) @ self.fc_w + self.fc_b, dim=1)

    class AllTypes(torch.nn.Module):
        def forward(self, IN_BOOL: T, IN_UINT8: T, IN_INT8: T, IN_INT16: T, IN_INT32: T, IN_INT64: T,
                    IN_FP16: T, IN_FP32: T, IN_FP64: T) -> Dict[str, T]:
            return {"OUT_BOOL": IN_BOOL, "OUT_UINT8": IN_UINT8, "OUT_INT8": IN_INT8, "OUT_INT16": IN_INT16,
                    "OUT_INT32": IN_INT32, "OUT_INT64": IN_INT64, "OUT_FP16": IN_FP16, "OUT_FP32": IN_FP32,
                    "OUT_FP64": IN_FP64}

    modules = {"add_sub": AddSub(), "fraud_mlp": FraudMlp(), "fp16_scale": Fp16Scale(),
               "bf16_double": Bf16Double(), "conv_net": ConvNet(), "all_types": AllTypes()}
    for onnx_model, twin in twins.items():
        d = os.path.join(HERE, twin, "1")
        os.makedirs(d, exist_ok=True)
        torch.jit.save(torch.jit.script(modules[onnx_model].eval()), os.path.join(d, "model.pt"))
        naming = 'backend: "pytorch"' if onnx_model == "fraud_mlp" else 'platform: "pytorch_libtorch"'
        with open(os.path.join(HERE, twin, "config.pbtxt"), "w") as f:
            f.write(twin_config(onnx_model, twin, naming))

# Pipelines: Triton ensembles of the models above and two small pre- and
# post-processing graphs. Each step runs on its model's own queue, so a step
# model batches pipeline requests with direct calls to it.
prng = np.random.default_rng(25)


def save_ensemble(model_name, config):
    """An ensemble's config and its version folder (empty but for a marker,
    as git keeps no empty folder)."""
    d = os.path.join(HERE, model_name, "1")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".keep"), "w") as f:
        f.write("")
    with open(os.path.join(HERE, model_name, "config.pbtxt"), "w") as f:
        f.write(config.strip() + "\n")


# image_preprocess: a UINT8 HWC image -> normalised FP32 CHW, as conv_net takes it.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
graph = helper.make_graph(
    [helper.make_node("Cast", ["raw"], ["f"], to=TensorProto.FLOAT),
     helper.make_node("Div", ["f", "scale"], ["unit"]),
     helper.make_node("Sub", ["unit", "mean"], ["centred"]),
     helper.make_node("Div", ["centred", "std"], ["hwc"]),
     helper.make_node("Transpose", ["hwc"], ["image"], perm=[0, 3, 1, 2])],
    "image_preprocess",
    [helper.make_tensor_value_info("raw", TensorProto.UINT8, ["batch", 64, 64, 3])],
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])],
    initializer=[numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale"),
                 numpy_helper.from_array(MEAN, "mean"), numpy_helper.from_array(STD, "std")])
save("image_preprocess", graph, """
name: "image_preprocess"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "raw" data_type: TYPE_UINT8 dims: [ 64, 64, 3 ] } ]
output [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
""")

# calibrate: temperature scaling of conv_net's probabilities,
# softmax(log(p) / T), with the class names as its output's labels.
TEMPERATURE = 1.5
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
graph = helper.make_graph(
    [helper.make_node("Log", ["probabilities"], ["logp"]),
     helper.make_node("Div", ["logp", "temperature"], ["scaled"]),
     helper.make_node("Softmax", ["scaled"], ["scores"], axis=1)],
    "calibrate",
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])],
    initializer=[numpy_helper.from_array(np.array(TEMPERATURE, dtype=np.float32), "temperature")])
save("calibrate", graph, """
name: "calibrate"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] } ]
output [ { name: "scores" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
""")
with open(os.path.join(HERE, "calibrate", "labels.txt"), "w") as f:
    f.write("\n".join(CLASSES) + "\n")

save_ensemble("image_pipeline", """
name: "image_pipeline"
platform: "ensemble"
max_batch_size: 16
input [ { name: "raw" data_type: TYPE_UINT8 dims: [ 64, 64, 3 ] } ]
output [ { name: "scores" data_type: TYPE_FP32 dims: [ 10 ] } ]
ensemble_scheduling {
  step [
    { model_name: "image_preprocess" model_version: -1
      input_map { key: "raw" value: "raw" } output_map { key: "image" value: "image" } },
    { model_name: "conv_net" model_version: -1
      input_map { key: "image" value: "image" } output_map { key: "probabilities" value: "probabilities" } },
    { model_name: "calibrate" model_version: -1
      input_map { key: "probabilities" value: "probabilities" } output_map { key: "scores" value: "scores" } }
  ]
}
""")
raw = prng.integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8)
pp = conv_net_probabilities(((raw.astype(np.float64) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2))
sp = np.exp(np.log(pp) / TEMPERATURE)
golden["image_pipeline"] = {
    "inputs": [tensor("raw", "UINT8", raw)],
    "outputs": [tensor("scores", "FP32", (sp / sp.sum(axis=1, keepdims=True)).astype(np.float32))],
}

# fraud_scaler: standardises raw features, (x - mean) / std, before fraud_mlp.
FEATURE_MEAN = (prng.standard_normal(32) * 50 + 100).astype(np.float32)
FEATURE_STD = (prng.random(32) * 20 + 1).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("Sub", ["raw", "mean"], ["centred"]),
     helper.make_node("Div", ["centred", "std"], ["scaled"])],
    "fraud_scaler",
    [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", 32])],
    [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 32])],
    initializer=[numpy_helper.from_array(FEATURE_MEAN, "mean"), numpy_helper.from_array(FEATURE_STD, "std")])
save("fraud_scaler", graph, """
name: "fraud_scaler"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ { name: "raw" data_type: TYPE_FP32 dims: [ 32 ] } ]
output [ { name: "scaled" data_type: TYPE_FP32 dims: [ 32 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
""")
xr = (rng.standard_normal((3, 32)).astype(np.float32) * FEATURE_STD + FEATURE_MEAN).astype(np.float32)
xs = ((xr - FEATURE_MEAN) / FEATURE_STD).astype(np.float32)
hs = np.maximum(xs.astype(np.float64) @ w1 + b1, 0)
logits = hs @ w2 + b2
es = np.exp(logits - logits.max(axis=1, keepdims=True))
for pipeline, mlp in (("fraud_pipeline", "fraud_mlp"), ("fraud_pipeline_pt", "fraud_mlp_pt")):
    what = "its TorchScript twin" if mlp.endswith("_pt") else "the ONNX model"
    save_ensemble(pipeline, f"""
# fraud_scaler, then {mlp} ({what}).
name: "{pipeline}"
platform: "ensemble"
max_batch_size: 64
input [ {{ name: "raw" data_type: TYPE_FP32 dims: [ 32 ] }} ]
output [ {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 2 ] }} ]
ensemble_scheduling {{
  step [
    {{ model_name: "fraud_scaler" model_version: -1
      input_map {{ key: "raw" value: "raw" }} output_map {{ key: "scaled" value: "scaled" }} }},
    {{ model_name: "{mlp}" model_version: -1
      input_map {{ key: "input" value: "scaled" }} output_map {{ key: "probabilities" value: "probabilities" }} }}
  ]
}}
""")
    golden[pipeline] = {
        "inputs": [tensor("raw", "FP32", xr)],
        "outputs": [tensor("probabilities", "FP32", (es / es.sum(axis=1, keepdims=True)).astype(np.float32))],
    }

with open(os.path.join(HERE, "golden.json"), "w") as f:
    json.dump(golden, f, indent=1)
    f.write("\n")
print("wrote", ", ".join(sorted(golden)))
