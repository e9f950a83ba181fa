#!/usr/bin/env python3
"""Fuses a pipeline's step models into one ONNX graph with onnx.compose, for
scripts/ensemble-bench.sh to compare an ensemble with the same graphs run as
one model.

    compose_pipeline.py OUT_REPO NAME INPUT OUTPUT MAX_BATCH DELAY_US STEP:OUT->IN STEP[:...]

Each step is a model folder of models/; `A:x->y B` feeds A's output x into B's
input y."""
import os
import sys

import onnx
from onnx import compose

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")


def main():
    out, name, inp, outp, max_batch, delay, *steps = sys.argv[1:]
    fused, link = None, None
    for s in steps:
        model_name, _, wire = s.partition(":")
        m = onnx.load(os.path.join(HERE, model_name, "1", "model.onnx"))
        fused = m if fused is None else compose.merge_models(fused, m, io_map=[link])
        if wire:
            a, b = wire.split("->")
            link = (a, b)
    d = os.path.join(out, name, "1")
    os.makedirs(d, exist_ok=True)
    onnx.save(fused, os.path.join(d, "model.onnx"))
    graph_in = {i.name: i for i in fused.graph.input}
    graph_out = {o.name: o for o in fused.graph.output}
    def dims(v):
        return [d.dim_value for d in v.type.tensor_type.shape.dim][1:]
    types = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}
    i, o = graph_in[inp], graph_out[outp]
    with open(os.path.join(out, name, "config.pbtxt"), "w") as f:
        f.write(f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "{inp}" data_type: {types[i.type.tensor_type.elem_type]} dims: {dims(i)} }} ]
output [ {{ name: "{outp}" data_type: {types[o.type.tensor_type.elem_type]} dims: {dims(o)} }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay} }}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
""")


if __name__ == "__main__":
    main()
