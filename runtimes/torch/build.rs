//! Compiles the C++ shim against the LibTorch that torch-sys found, and
//! gives the library a RUNPATH to that LibTorch and to its own folder, so it
//! loads without LD_LIBRARY_PATH both in the build tree and where LibTorch's
//! libraries are copied beside it (a container image).
use std::path::PathBuf;

fn main() {
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports its LibTorch"));
    let root = lib.parent().expect("LibTorch's lib folder has a parent").to_owned();
    println!("cargo:rerun-if-changed=src/shim.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/shim.cpp")
        .compile("quiver_torch_shim");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}:$ORIGIN", lib.display());
    // --as-needed would drop libtorch_cuda.so (nothing names its symbols),
    // and with it the CUDA kernels: keep it wherever LibTorch has CUDA.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
