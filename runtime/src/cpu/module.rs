//! Loading a CPU variant's code: an ELF shared object from the artifact, opened in-process.
//!
//! The code section holds a complete `.so` exporting one C function per kernel,
//! `kiln_<kernel>` (see [`KernelFn`]). It is written to an anonymous memory file (memfd;
//! a temporary file where that is unavailable) and `dlopen`ed from there, so nothing is
//! left on disk and the artifact needs no extraction step. Every kernel symbol is resolved
//! at load time, so a missing kernel is an error before anything runs.

use crate::error::RuntimeError;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

/// The kernel ABI. `args`: buffer base pointers in the launch's `args` order; `dims`: the
/// symbol values in `Plan.symbols` order; `[begin, end)`: the flattened grid points to do.
pub type KernelFn =
    unsafe extern "C" fn(args: *const *mut u8, dims: *const i64, begin: i64, end: i64);

/// A loaded code section and its resolved kernels.
pub struct CpuModule {
    target: String,
    kernels: HashMap<String, KernelFn>,
    /// Keeps the code mapped: the function pointers above point into it.
    _library: libloading::Library,
    /// Dropped after `_library` (fields drop in order): see `load`.
    _file: CodeFile,
}

impl std::fmt::Debug for CpuModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.kernels.keys().collect();
        names.sort();
        f.debug_struct("CpuModule")
            .field("target", &self.target)
            .field("kernels", &names)
            .finish()
    }
}

impl CpuModule {
    /// Loads `code` (already hash-checked) for `target` and resolves `kiln_<k>` for every `k`.
    pub fn load(target: &str, code: &[u8], kernels: &[String]) -> Result<CpuModule, RuntimeError> {
        let err = |msg: String| RuntimeError::CodeLoad {
            target: target.to_string(),
            msg,
        };
        check_elf(code).map_err(err)?;
        let file = CodeFile::write(code)
            .map_err(|e| err(format!("cannot stage the code in memory: {e}")))?;
        // SAFETY: dlopen runs the object's initialisers. The bytes come from a hash-checked
        // artifact section and are an ELF shared object for this machine (checked above);
        // kiln's code generator emits no initialisers with side effects.
        let library = unsafe {
            libloading::os::unix::Library::open(Some(&file.path), libc::RTLD_NOW | libc::RTLD_LOCAL)
        }
        .map_err(|e| err(e.to_string()))?;
        // The file stays open as long as the library is loaded: glibc's dlopen recognises
        // an already-loaded object by its path, and a closed memfd's number (hence its
        // `/proc/self/fd/N` path) would be reused by the next module loaded, which would
        // then silently get this module's code.
        let library = libloading::Library::from(library);
        let mut resolved = HashMap::with_capacity(kernels.len());
        for k in kernels {
            let symbol = format!("kiln_{k}\0");
            // SAFETY: the artifact contract says `kiln_<k>` has the `KernelFn` signature; the
            // pointer is copied out and used only while `library` (stored beside it) lives.
            let f = unsafe { library.get::<KernelFn>(symbol.as_bytes()) }.map_err(|e| {
                RuntimeError::MissingKernel {
                    target: target.to_string(),
                    kernel: k.clone(),
                    msg: e.to_string(),
                }
            })?;
            resolved.insert(k.clone(), *f);
        }
        Ok(CpuModule {
            target: target.to_string(),
            kernels: resolved,
            _library: library,
            _file: file,
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn kernel(&self, name: &str) -> Option<KernelFn> {
        self.kernels.get(name).copied()
    }
}

/// ELF machine number of the host (`e_machine`).
const HOST_MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else {
    None
};

/// Checks the ELF header: 64-bit little-endian shared object for this machine.
fn check_elf(code: &[u8]) -> Result<(), String> {
    if code.len() < 20 || &code[..4] != b"\x7fELF" {
        return Err("the code section is not an ELF file".into());
    }
    if code[4] != 2 || code[5] != 1 {
        return Err("the code is not a 64-bit little-endian ELF file".into());
    }
    let e_type = u16::from_le_bytes([code[16], code[17]]);
    if e_type != 3 {
        return Err(format!(
            "the code is an ELF file of type {e_type}, not a shared object (3)"
        ));
    }
    let machine = u16::from_le_bytes([code[18], code[19]]);
    match HOST_MACHINE {
        Some(m) if m == machine => Ok(()),
        _ => Err(format!(
            "the code is for ELF machine {machine} (x86-64 is 62, aarch64 183), this host is {}",
            std::env::consts::ARCH
        )),
    }
}

/// Where the code lives while it is being opened.
struct CodeFile {
    path: PathBuf,
    _file: std::fs::File,
    _temp: Option<tempfile::TempPath>,
}

impl CodeFile {
    fn write(code: &[u8]) -> std::io::Result<CodeFile> {
        if let Some(f) = memfd(code) {
            return Ok(f);
        }
        let mut temp = tempfile::Builder::new()
            .prefix("kiln-code-")
            .suffix(".so")
            .tempfile()?;
        temp.write_all(code)?;
        temp.flush()?;
        let (file, path) = temp.into_parts();
        Ok(CodeFile {
            path: path.to_path_buf(),
            _file: file,
            _temp: Some(path),
        })
    }
}

#[cfg(target_os = "linux")]
fn memfd(code: &[u8]) -> Option<CodeFile> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: the name is a NUL-terminated literal; the call has no other preconditions.
    let fd = unsafe { libc::memfd_create(c"kiln-code".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(code).ok()?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Some(CodeFile {
        path,
        _file: file,
        _temp: None,
    })
}

#[cfg(not(target_os = "linux"))]
fn memfd(_code: &[u8]) -> Option<CodeFile> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_code_is_refused_before_dlopen() {
        let e = CpuModule::load("cpu:x86-64", b"not code at all, clearly", &[]).unwrap_err();
        assert!(
            e.to_string().contains("cpu:x86-64") && e.to_string().contains("not an ELF"),
            "{e}"
        );
        let mut elf = b"\x7fELF\x02\x01".to_vec();
        elf.resize(20, 0);
        elf[16] = 3;
        elf[18] = 0x28; // 32-bit ARM
        let e = CpuModule::load("cpu:x86-64", &elf, &[]).unwrap_err();
        assert!(e.to_string().contains("ELF machine 40"), "{e}");
    }
}
