// What tch does not expose of a TorchScript module: the argument names of
// `forward` (to match config.pbtxt's inputs by name, as Triton does), a
// forward that runs under InferenceMode, and outputs of any shape Triton
// accepts (a Tensor, a tuple or list of Tensors, a Dict[str, Tensor]) handed
// back one tensor at a time. Tensors cross as `at::Tensor*`, tch's own
// representation. No C++ exception leaves this file.
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <exception>
#include <string>
#include <vector>

extern "C" {
typedef void (*qt_text_fn)(void* ctx, const char* text);
typedef void (*qt_arg_fn)(void* ctx, const char* name, const char* type, int has_default);
typedef void (*qt_output_fn)(void* ctx, const char* key, at::Tensor* tensor);
}

namespace {

template <typename F>
int guarded(void* ctx, qt_text_fn error, F&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    error(ctx, e.what_without_backtrace());
  } catch (const std::exception& e) {
    error(ctx, e.what());
  } catch (...) {
    error(ctx, "unknown C++ exception");
  }
  return -1;
}

// Hands each tensor of a forward result to `out`; fails on anything else.
int flatten(const c10::IValue& result, void* ctx, qt_output_fn out, qt_text_fn error) {
  if (result.isTensor()) {
    out(ctx, nullptr, new at::Tensor(result.toTensor()));
    return 0;
  }
  std::vector<c10::IValue> items;
  if (result.isTuple()) {
    const auto& elements = result.toTupleRef().elements();
    items.assign(elements.begin(), elements.end());
  } else if (result.isList()) {
    const auto list = result.toListRef();
    items.assign(list.begin(), list.end());
  } else if (result.isGenericDict()) {
    for (const auto& entry : result.toGenericDict()) {
      if (!entry.key().isString() || !entry.value().isTensor()) {
        error(ctx, ("forward returned a dict entry of " + entry.key().tagKind() + " -> " +
                    entry.value().tagKind() + "; quiver takes Dict[str, Tensor]")
                       .c_str());
        return -1;
      }
      out(ctx, entry.key().toStringRef().c_str(), new at::Tensor(entry.value().toTensor()));
    }
    return 0;
  } else {
    error(ctx, ("forward returned a " + result.tagKind() +
                "; quiver takes a Tensor, a tuple or list of Tensors, or a Dict[str, Tensor]")
                   .c_str());
    return -1;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].isTensor()) {
      error(ctx, ("element " + std::to_string(i) + " of what forward returned is a " +
                  items[i].tagKind() + ", not a Tensor")
                     .c_str());
      return -1;
    }
    out(ctx, nullptr, new at::Tensor(items[i].toTensor()));
  }
  return 0;
}

}  // namespace

extern "C" {

// Loads a TorchScript file onto `device` (-1: the CPU, else that CUDA device)
// in eval mode. Null on failure, after reporting why.
void* qt_load(const char* path, int device, void* ctx, qt_text_fn error) {
  void* module = nullptr;
  guarded(ctx, error, [&] {
    c10::Device where = device < 0 ? c10::Device(c10::kCPU)
                                   : c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
    auto loaded = std::make_unique<torch::jit::Module>(torch::jit::load(path, where));
    loaded->eval();
    module = loaded.release();
    return 0;
  });
  return module;
}

void qt_free(void* module) { delete static_cast<torch::jit::Module*>(module); }

// Reports each argument of forward but `self`: name, type, whether it has a default.
int qt_forward_schema(void* module, void* ctx, qt_arg_fn arg, qt_text_fn error) {
  return guarded(ctx, error, [&] {
    auto method = static_cast<torch::jit::Module*>(module)->get_method("forward");
    const auto& args = method.function().getSchema().arguments();
    for (size_t i = 1; i < args.size(); ++i) {
      arg(ctx, args[i].name().c_str(), args[i].type()->str().c_str(), args[i].default_value().has_value());
    }
    return 0;
  });
}

// Runs forward on `count` arguments in order; a null input passes the
// argument's default (or None). Outputs go to `out` as new tensors the
// caller owns.
int qt_forward(void* module, at::Tensor* const* inputs, int count, void* ctx, qt_output_fn out,
               qt_text_fn error) {
  return guarded(ctx, error, [&] {
    c10::InferenceMode inference;
    auto* m = static_cast<torch::jit::Module*>(module);
    std::vector<c10::IValue> args;
    args.reserve(count);
    for (int i = 0; i < count; ++i) {
      if (inputs[i] != nullptr) {
        args.emplace_back(*inputs[i]);
        continue;
      }
      // An input the request left out (optional in config.pbtxt): the
      // argument's default, else None.
      const auto& schema = m->get_method("forward").function().getSchema().arguments();
      if (static_cast<size_t>(i) + 1 < schema.size() && schema[i + 1].default_value()) {
        args.push_back(*schema[i + 1].default_value());
      } else {
        args.emplace_back();
      }
    }
    return flatten(m->forward(std::move(args)), ctx, out, error);
  });
}

}  // extern "C"
