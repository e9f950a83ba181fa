//! The C++ shim (shim.cpp): a TorchScript module that tch cannot describe.
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;

use tch::Tensor;

type TextFn = unsafe extern "C" fn(*mut c_void, *const c_char);
type ArgFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, c_int);
type OutputFn = unsafe extern "C" fn(*mut c_void, *const c_char, *mut torch_sys::C_tensor);

unsafe extern "C" {
    fn qt_load(path: *const c_char, device: c_int, ctx: *mut c_void, error: TextFn) -> *mut c_void;
    fn qt_free(module: *mut c_void);
    fn qt_forward_schema(module: *mut c_void, ctx: *mut c_void, arg: ArgFn, error: TextFn) -> c_int;
    fn qt_forward(
        module: *mut c_void,
        inputs: *const *const torch_sys::C_tensor,
        count: c_int,
        ctx: *mut c_void,
        out: OutputFn,
        error: TextFn,
    ) -> c_int;
}

/// One argument of `forward`.
#[derive(Clone, Debug)]
pub struct Argument {
    pub name: String,
    /// TorchScript's type, e.g. "Tensor", "Optional[Tensor]", "List[Tensor]".
    pub ty: String,
    pub has_default: bool,
}

/// A loaded TorchScript module, freed on drop.
pub struct Module(*mut c_void);

// SAFETY: a torch::jit::Module may move between threads; quiver uses each
// one from the single instance thread that owns it.
unsafe impl Send for Module {}

unsafe extern "C" fn store_text(ctx: *mut c_void, text: *const c_char) {
    // SAFETY: ctx is the &mut String the caller passed; text is a C string.
    unsafe { *(ctx as *mut String) = CStr::from_ptr(text).to_string_lossy().into_owned() };
}

struct SchemaCtx {
    args: Vec<Argument>,
    error: String,
}

unsafe extern "C" fn store_arg(ctx: *mut c_void, name: *const c_char, ty: *const c_char, has_default: c_int) {
    // SAFETY: ctx is the SchemaCtx the caller passed; name and ty are C strings.
    unsafe {
        (*(ctx as *mut SchemaCtx)).args.push(Argument {
            name: CStr::from_ptr(name).to_string_lossy().into_owned(),
            ty: CStr::from_ptr(ty).to_string_lossy().into_owned(),
            has_default: has_default != 0,
        })
    };
}

unsafe extern "C" fn store_schema_error(ctx: *mut c_void, text: *const c_char) {
    // SAFETY: as store_text, on the SchemaCtx's error.
    unsafe {
        store_text(
            &mut (*(ctx as *mut SchemaCtx)).error as *mut String as *mut c_void,
            text,
        )
    };
}

/// What forward returned: each tensor with its dict key, if any.
#[derive(Default)]
pub struct Outputs {
    pub tensors: Vec<(Option<String>, Tensor)>,
    error: String,
}

unsafe extern "C" fn store_output(ctx: *mut c_void, key: *const c_char, tensor: *mut torch_sys::C_tensor) {
    // SAFETY: ctx is the Outputs the caller passed; the shim hands over a new
    // at::Tensor that tch's Tensor now owns.
    unsafe {
        let key = (!key.is_null()).then(|| CStr::from_ptr(key).to_string_lossy().into_owned());
        (*(ctx as *mut Outputs)).tensors.push((key, Tensor::from_ptr(tensor)));
    }
}

unsafe extern "C" fn store_output_error(ctx: *mut c_void, text: *const c_char) {
    // SAFETY: as store_text, on the Outputs' error.
    unsafe { store_text(&mut (*(ctx as *mut Outputs)).error as *mut String as *mut c_void, text) };
}

impl Module {
    /// Loads `path` onto the CPU (`None`) or a CUDA device, in eval mode.
    pub fn load(path: &Path, cuda: Option<u32>) -> Result<Module, String> {
        let c_path =
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "the path holds a NUL byte".to_owned())?;
        let mut error = String::new();
        let device = cuda.map_or(-1, |d| d as c_int);
        // SAFETY: valid C string and callback context for the call's duration.
        let module = unsafe {
            qt_load(
                c_path.as_ptr(),
                device,
                &mut error as *mut String as *mut c_void,
                store_text,
            )
        };
        if module.is_null() {
            return Err(error);
        }
        Ok(Module(module))
    }

    /// The arguments of forward, `self` left out.
    pub fn forward_arguments(&self) -> Result<Vec<Argument>, String> {
        let mut ctx = SchemaCtx {
            args: Vec::new(),
            error: String::new(),
        };
        // SAFETY: self.0 is a live module; ctx outlives the call.
        let rc = unsafe {
            qt_forward_schema(
                self.0,
                &mut ctx as *mut SchemaCtx as *mut c_void,
                store_arg,
                store_schema_error,
            )
        };
        if rc != 0 {
            return Err(ctx.error);
        }
        Ok(ctx.args)
    }

    /// Runs forward on the arguments in order (`None`: the argument's default).
    pub fn forward(&mut self, args: &[Option<Tensor>]) -> Result<Vec<(Option<String>, Tensor)>, String> {
        let pointers: Vec<*const torch_sys::C_tensor> = args
            .iter()
            .map(|a| a.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()))
            .collect();
        let mut outputs = Outputs::default();
        // SAFETY: self.0 is a live module, the tensors outlive the call, and
        // outputs is the context the callbacks expect.
        let rc = unsafe {
            qt_forward(
                self.0,
                pointers.as_ptr(),
                pointers.len() as c_int,
                &mut outputs as *mut Outputs as *mut c_void,
                store_output,
                store_output_error,
            )
        };
        if rc != 0 {
            return Err(outputs.error);
        }
        Ok(outputs.tensors)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: self.0 came from qt_load and is freed once.
        unsafe { qt_free(self.0) }
    }
}
