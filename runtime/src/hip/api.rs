//! The part of the HIP runtime API kiln calls, opened from `libamdhip64.so` at run time so
//! that kiln builds and starts without ROCm. Signatures follow `hip_runtime_api.h` (ROCm 5
//! and 6 share them); every call's status is turned into an error naming the call.

use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

pub type Status = c_int;
type Stream = *mut c_void;

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(*mut c_void);

        impl $name {
            fn null() -> Self {
                $name(std::ptr::null_mut())
            }
        }
    };
}

handle!(
    /// A loaded code object (`hipModule_t`).
    Module
);
handle!(
    /// A kernel of a loaded module (`hipFunction_t`).
    Function
);
handle!(
    /// A recorded event (`hipEvent_t`).
    Event
);
handle!(
    /// A device address (`hipDeviceptr_t`).
    DevicePtr
);

impl DevicePtr {
    pub fn addr(self) -> u64 {
        self.0 as u64
    }
}

/// `extra` launch-argument markers (`HIP_LAUNCH_PARAM_*`): the argument block, its size, end.
pub const LAUNCH_PARAM_BUFFER_POINTER: *mut c_void = std::ptr::without_provenance_mut(1);
pub const LAUNCH_PARAM_BUFFER_SIZE: *mut c_void = std::ptr::without_provenance_mut(2);
pub const LAUNCH_PARAM_END: *mut c_void = std::ptr::without_provenance_mut(3);

/// Where the library is looked for, in order: the loader's search path, then ROCm's default
/// install prefix.
pub const LIBRARY_NAMES: [&str; 4] = [
    "libamdhip64.so",
    "libamdhip64.so.6",
    "libamdhip64.so.5",
    "/opt/rocm/lib/libamdhip64.so",
];

type Fn0 = unsafe extern "C" fn() -> Status;

/// The resolved entry points. The library stays loaded as long as this lives.
pub struct Hip {
    _lib: Library,
    init: unsafe extern "C" fn(c_uint) -> Status,
    device_count: unsafe extern "C" fn(*mut c_int) -> Status,
    set_device: unsafe extern "C" fn(c_int) -> Status,
    device_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> Status,
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
    module_load_data: unsafe extern "C" fn(*mut Module, *const c_void) -> Status,
    module_get_function: unsafe extern "C" fn(*mut Function, Module, *const c_char) -> Status,
    module_unload: unsafe extern "C" fn(Module) -> Status,
    malloc: unsafe extern "C" fn(*mut DevicePtr, usize) -> Status,
    free: unsafe extern "C" fn(DevicePtr) -> Status,
    memset: unsafe extern "C" fn(DevicePtr, c_int, usize) -> Status,
    memcpy_htod: unsafe extern "C" fn(DevicePtr, *const c_void, usize) -> Status,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, DevicePtr, usize) -> Status,
    memcpy_dtod: unsafe extern "C" fn(DevicePtr, DevicePtr, usize) -> Status,
    #[allow(clippy::type_complexity)]
    launch: unsafe extern "C" fn(
        Function,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        Stream,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> Status,
    synchronize: Fn0,
    event_create: unsafe extern "C" fn(*mut Event) -> Status,
    event_record: unsafe extern "C" fn(Event, Stream) -> Status,
    event_synchronize: unsafe extern "C" fn(Event) -> Status,
    event_elapsed: unsafe extern "C" fn(*mut f32, Event, Event) -> Status,
    event_destroy: unsafe extern "C" fn(Event) -> Status,
}

impl std::fmt::Debug for Hip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hip")
    }
}

macro_rules! resolve {
    ($lib:expr, $name:literal) => {{
        // SAFETY: the symbol's type is the C signature in hip_runtime_api.h.
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }
            .map_err(|e| format!("{} lacks {}: {e}", LIBRARY_NAMES[0], $name))?;
        *s
    }};
}

impl Hip {
    /// Opens the first library of `names` that loads, resolves every entry point and
    /// initialises the runtime, or says why it cannot.
    pub fn open(names: &[&str]) -> Result<Hip, String> {
        let mut tried = Vec::new();
        let lib = names
            .iter()
            .find_map(|n| {
                // SAFETY: loading ROCm's runtime runs its initialisers, which is what it is for.
                unsafe { Library::new(n) }
                    .map_err(|e| tried.push(format!("{n}: {e}")))
                    .ok()
            })
            .ok_or_else(|| {
                format!(
                    "needs ROCm's HIP runtime (libamdhip64.so), which this machine lacks ({})",
                    tried.join("; ")
                )
            })?;
        let hip = Hip {
            init: resolve!(lib, "hipInit"),
            device_count: resolve!(lib, "hipGetDeviceCount"),
            set_device: resolve!(lib, "hipSetDevice"),
            device_name: resolve!(lib, "hipDeviceGetName"),
            error_string: resolve!(lib, "hipGetErrorString"),
            module_load_data: resolve!(lib, "hipModuleLoadData"),
            module_get_function: resolve!(lib, "hipModuleGetFunction"),
            module_unload: resolve!(lib, "hipModuleUnload"),
            malloc: resolve!(lib, "hipMalloc"),
            free: resolve!(lib, "hipFree"),
            memset: resolve!(lib, "hipMemset"),
            memcpy_htod: resolve!(lib, "hipMemcpyHtoD"),
            memcpy_dtoh: resolve!(lib, "hipMemcpyDtoH"),
            memcpy_dtod: resolve!(lib, "hipMemcpyDtoD"),
            launch: resolve!(lib, "hipModuleLaunchKernel"),
            synchronize: resolve!(lib, "hipDeviceSynchronize"),
            event_create: resolve!(lib, "hipEventCreate"),
            event_record: resolve!(lib, "hipEventRecord"),
            event_synchronize: resolve!(lib, "hipEventSynchronize"),
            event_elapsed: resolve!(lib, "hipEventElapsedTime"),
            event_destroy: resolve!(lib, "hipEventDestroy"),
            _lib: lib,
        };
        // SAFETY: plain C calls with valid out-pointers.
        unsafe {
            hip.check((hip.init)(0), "hipInit")?;
            let mut n = 0;
            hip.check((hip.device_count)(&mut n), "hipGetDeviceCount")?;
            if n < 1 {
                return Err("the HIP runtime sees no GPU".into());
            }
            hip.check((hip.set_device)(0), "hipSetDevice")?;
        }
        Ok(hip)
    }

    /// `Ok` for `hipSuccess`, else the runtime's own words for the status.
    pub fn check(&self, status: Status, call: &str) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: hipGetErrorString returns a static NUL-terminated string (or null).
        let text = unsafe {
            let p = (self.error_string)(status);
            if p.is_null() {
                "unknown error".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(format!("{call} failed: {text} ({status})"))
    }

    pub fn device_name(&self) -> Result<String, String> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer's length is passed with it.
        self.check(
            unsafe { (self.device_name)(buf.as_mut_ptr(), buf.len() as c_int, 0) },
            "hipDeviceGetName",
        )?;
        // SAFETY: the runtime NUL-terminates within the length given.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// Loads a code object (an AMDGPU ELF) from memory.
    pub fn load_module(&self, image: &[u8]) -> Result<Module, String> {
        let mut m = Module::null();
        // SAFETY: `image` is a whole code object that outlives the call (HIP copies it).
        self.check(
            unsafe { (self.module_load_data)(&mut m, image.as_ptr().cast()) },
            "hipModuleLoadData",
        )?;
        Ok(m)
    }

    pub fn function(&self, module: Module, name: &str) -> Result<Function, String> {
        let c = std::ffi::CString::new(name).map_err(|_| format!("kernel name {name:?}"))?;
        let mut f = Function::null();
        // SAFETY: `module` came from `load_module`; `c` is NUL-terminated.
        self.check(
            unsafe { (self.module_get_function)(&mut f, module, c.as_ptr()) },
            "hipModuleGetFunction",
        )?;
        Ok(f)
    }

    pub fn unload(&self, module: Module) {
        // SAFETY: called once per loaded module, when nothing runs from it any more.
        unsafe { (self.module_unload)(module) };
    }

    /// `len` zeroed bytes of device memory.
    pub fn alloc_zeroed(&self, len: usize) -> Result<DevicePtr, String> {
        let mut p = DevicePtr::null();
        // SAFETY: out-pointer valid; the allocation is `len` bytes, zeroed before use.
        unsafe {
            self.check((self.malloc)(&mut p, len.max(1)), "hipMalloc")?;
            self.check((self.memset)(p, 0, len.max(1)), "hipMemset")?;
        }
        Ok(p)
    }

    pub fn free(&self, p: DevicePtr) {
        // SAFETY: `p` came from `alloc_zeroed` and is freed once.
        unsafe { (self.free)(p) };
    }

    /// # Safety
    /// `dst` must be device memory of at least `src.len()` bytes.
    pub unsafe fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<(), String> {
        self.check(
            (self.memcpy_htod)(dst, src.as_ptr().cast(), src.len()),
            "hipMemcpyHtoD",
        )
    }

    /// # Safety
    /// `src` must be device memory of at least `dst.len()` bytes.
    pub unsafe fn download(&self, dst: &mut [u8], src: DevicePtr) -> Result<(), String> {
        self.check(
            (self.memcpy_dtoh)(dst.as_mut_ptr().cast(), src, dst.len()),
            "hipMemcpyDtoH",
        )
    }

    /// # Safety
    /// `dst` and `src` must be device memory of at least `len` bytes each, not overlapping.
    pub unsafe fn copy(&self, dst: DevicePtr, src: DevicePtr, len: usize) -> Result<(), String> {
        self.check((self.memcpy_dtod)(dst, src, len), "hipMemcpyDtoD")
    }

    /// Launches `f` on the null stream with `args` as its argument block (see `args.rs`).
    ///
    /// # Safety
    /// `args` must be the block the kernel's ABI expects, every address in it valid for
    /// what the kernel reads and writes.
    pub unsafe fn launch(
        &self,
        f: Function,
        blocks: u32,
        threads: u32,
        shared_bytes: u32,
        args: &mut [u8],
    ) -> Result<(), String> {
        let mut size = args.len();
        let mut extra = [
            LAUNCH_PARAM_BUFFER_POINTER,
            args.as_mut_ptr().cast(),
            LAUNCH_PARAM_BUFFER_SIZE,
            (&mut size as *mut usize).cast(),
            LAUNCH_PARAM_END,
        ];
        self.check(
            (self.launch)(
                f,
                blocks,
                1,
                1,
                threads,
                1,
                1,
                shared_bytes,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                extra.as_mut_ptr(),
            ),
            "hipModuleLaunchKernel",
        )
    }

    pub fn synchronize(&self) -> Result<(), String> {
        // SAFETY: no arguments.
        self.check(unsafe { (self.synchronize)() }, "hipDeviceSynchronize")
    }

    /// A recorded event on the null stream.
    pub fn record(&self) -> Result<Event, String> {
        let mut e = Event::null();
        // SAFETY: out-pointer valid; the event is destroyed by `elapsed_ms`.
        unsafe {
            self.check((self.event_create)(&mut e), "hipEventCreate")?;
            self.check(
                (self.event_record)(e, std::ptr::null_mut()),
                "hipEventRecord",
            )?;
        }
        Ok(e)
    }

    /// Milliseconds between two recorded events; both are destroyed.
    pub fn elapsed_ms(&self, start: Event, end: Event) -> Result<f32, String> {
        let mut ms = 0.0f32;
        // SAFETY: both events came from `record` and are used once here.
        let r = unsafe {
            self.check((self.event_synchronize)(end), "hipEventSynchronize")
                .and_then(|_| {
                    self.check(
                        (self.event_elapsed)(&mut ms, start, end),
                        "hipEventElapsedTime",
                    )
                })
        };
        // SAFETY: as above.
        unsafe {
            (self.event_destroy)(start);
            (self.event_destroy)(end);
        }
        r.map(|_| ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_runtime_is_named_with_what_was_tried() {
        let e = Hip::open(&["/nonexistent/libamdhip64.so"]).unwrap_err();
        assert!(e.contains("needs ROCm's HIP runtime"), "{e}");
        assert!(e.contains("/nonexistent/libamdhip64.so"), "{e}");
    }
}
