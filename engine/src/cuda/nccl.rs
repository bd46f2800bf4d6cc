//! NCCL, the collective library every framework uses between GPUs: the few calls that
//! data-parallel training needs (a unique id, a communicator per process, an in-place sum
//! of a tensor across the processes) on the engine's one stream, with raw device pointers
//! of the engine's own buffers.
//!
//! Loaded at run time (`dlopen`), not linked: a `cuda` build must link and run on machines
//! without NCCL (the build machine; GPU machines that never train on several GPUs), NCCL comes as a
//! pip wheel (`nvidia-nccl-cu13`, installed with PyTorch) whose folder no linker knows, and
//! the crates that bind it (`cudarc`'s `nccl` module) bring their own CUDA context and
//! stream types, while the engine's are cust's. Eight C functions declared here are the
//! whole binding; `libc` (already in the dependency tree) supplies `dlopen`.
//!
//! Where the library is looked for, in order: `$MAMBA_NCCL_LIB` if set (and nothing else);
//! else `libnccl.so.2` on the loader's path (LD_LIBRARY_PATH, ld.so.cache); else the pip
//! wheel's folder, `nvidia/nccl/lib/` under the usual Python package directories
//! ([`wheel_patterns`]). A library that is not found is an error listing what was tried.

use super::{err, gpu};
use crate::{
    error::{Error, Result},
    DType, Device, Tensor,
};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

const OP: &str = "nccl";

/// `ncclResult_t`; 0 is success.
type NcclResult = c_int;
/// `ncclComm_t`, an opaque pointer.
type RawComm = *mut c_void;

/// `ncclUniqueId`: 128 opaque bytes that rank 0 makes and every rank needs to join.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [u8; ID_BYTES],
}

/// Bytes of an NCCL unique id (`NCCL_UNIQUE_ID_BYTES`).
pub const ID_BYTES: usize = 128;

/// `ncclDataType_t` values of nccl.h.
const NCCL_FLOAT32: c_int = 7;
const NCCL_FLOAT64: c_int = 8;
/// `ncclRedOp_t`'s `ncclSum`.
const NCCL_SUM: c_int = 0;
/// `ncclInProgress`: a non-blocking call still running (reported by ncclCommGetAsyncError).
const NCCL_IN_PROGRESS: c_int = 7;

// The C signatures of the functions used (nccl.h, stable across NCCL 2.x).
type GetVersion = unsafe extern "C" fn(*mut c_int) -> NcclResult;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> NcclResult;
type CommInitRank = unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> NcclResult;
type AllReduce =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, *mut c_void) -> NcclResult;
type CommClose = unsafe extern "C" fn(RawComm) -> NcclResult;
type GetErrorString = unsafe extern "C" fn(NcclResult) -> *const c_char;
type CommGetAsyncError = unsafe extern "C" fn(RawComm, *mut NcclResult) -> NcclResult;

/// The library's entry points, resolved once; the library is never unloaded.
struct Api {
    path: String,
    version: (u32, u32, u32),
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    all_reduce: AllReduce,
    comm_destroy: CommClose,
    comm_abort: CommClose,
    get_error_string: GetErrorString,
    comm_get_async_error: CommGetAsyncError,
}

static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();

fn api() -> Result<&'static Api> {
    match API.get_or_init(open) {
        Ok(api) => Ok(api),
        Err(msg) => Err(Error::Device { op: OP, device: Device::Cuda, msg: msg.clone() }),
    }
}

/// Load NCCL (once) and say which: its path and version (major, minor, patch).
pub fn library() -> Result<(&'static str, (u32, u32, u32))> {
    let api = api()?;
    Ok((&api.path, api.version))
}

/// Where the wheel puts the library, under a Python package folder. (CUDA 13's other wheels
/// moved to nvidia/cu13/lib; NCCL's stayed in nvidia/nccl/lib, the second is a fallback.)
const WHEEL_LIBS: [&str; 2] = ["nvidia/nccl/lib/libnccl.so.2", "nvidia/cu13/lib/libnccl.so.2"];

/// The usual Python package folders; `*` stands for any `python3.X`. `home`, `venv` and
/// `conda` are $HOME, $VIRTUAL_ENV and $CONDA_PREFIX.
pub fn wheel_roots(home: Option<&str>, venv: Option<&str>, conda: Option<&str>) -> Vec<String> {
    let mut roots: Vec<String> = [
        "/usr/local/lib/python3*/dist-packages",
        "/usr/local/lib/python3*/site-packages",
        "/usr/lib/python3/dist-packages",
        "/usr/lib/python3*/site-packages",
        "/opt/conda/lib/python3*/site-packages",
    ]
    .map(String::from)
    .to_vec();
    roots.extend(home.map(|h| format!("{h}/.local/lib/python3*/site-packages")));
    roots.extend([venv, conda].into_iter().flatten().map(|p| format!("{p}/lib/python3*/site-packages")));
    roots
}

/// The wheel's library under each of [`wheel_roots`].
pub fn wheel_patterns(roots: &[String]) -> Vec<String> {
    roots.iter().flat_map(|r| WHEEL_LIBS.map(|l| format!("{r}/{l}"))).collect()
}

/// The existing files a pattern with at most one `*` (inside one path component) names,
/// newest Python first (names sorted in reverse).
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let Some(star) = pattern.find('*') else {
        return Some(PathBuf::from(pattern)).filter(|p| p.is_file()).into_iter().collect();
    };
    let dir_end = pattern[..star].rfind('/').map_or(0, |i| i + 1);
    let comp_end = pattern[star..].find('/').map_or(pattern.len(), |i| star + i);
    let (dir, prefix, suffix, rest) =
        (&pattern[..dir_end], &pattern[dir_end..star], &pattern[star + 1..comp_end], &pattern[comp_end..]);
    let Ok(entries) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    names.into_iter().map(|n| PathBuf::from(format!("{dir}{n}{rest}"))).filter(|p| p.is_file()).collect()
}

/// Find, load and resolve NCCL, or say everything that was tried and what to do.
fn open() -> std::result::Result<Api, String> {
    search(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// [`open`] with the environment variables `env` gives.
fn search(env: impl Fn(&str) -> Option<String>) -> std::result::Result<Api, String> {
    let (mut candidates, mut roots) = (Vec::new(), Vec::new());
    match env("MAMBA_NCCL_LIB") {
        Some(path) => candidates.push(path),
        None => {
            candidates.push("libnccl.so.2".to_string());
            roots = wheel_roots(env("HOME").as_deref(), env("VIRTUAL_ENV").as_deref(), env("CONDA_PREFIX").as_deref());
            for pattern in wheel_patterns(&roots) {
                candidates.extend(expand(&pattern).into_iter().map(|p| p.display().to_string()));
            }
        }
    }
    let mut failed = Vec::new();
    for candidate in &candidates {
        match dlopen(candidate) {
            Ok(handle) => return resolve(handle, candidate),
            Err(why) => failed.push(format!("{candidate}: {why}")),
        }
    }
    let how = match env("MAMBA_NCCL_LIB") {
        Some(_) => "MAMBA_NCCL_LIB must name the library file itself",
        None => "install it (pip install nvidia-nccl-cu13, which PyTorch brings) or set MAMBA_NCCL_LIB to its path",
    };
    let searched = match roots.is_empty() {
        true => String::new(),
        false => format!("; searched {} under {}", WHEEL_LIBS.join(" and "), roots.join(", ")),
    };
    Err(format!("cannot load NCCL (libnccl.so.2), which --gpus needs: {how}. Tried {}{searched}", failed.join("; ")))
}

fn dlopen(path: &str) -> std::result::Result<*mut c_void, String> {
    let name = CString::new(path).map_err(|_| "a NUL byte in the path".to_string())?;
    // SAFETY: a NUL-terminated name; the handle is kept for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(dl_error());
    }
    Ok(handle)
}

/// The loader's last error, as text.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        return "unknown loader error".into();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
}

/// The address of `name` in `handle`, or an error naming it.
fn symbol(handle: *mut c_void, name: &CStr, path: &str) -> std::result::Result<*mut c_void, String> {
    // SAFETY: a live handle from dlopen and a NUL-terminated name.
    let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if f.is_null() {
        return Err(format!("{path} has no {} ({}): not NCCL 2.x?", name.to_string_lossy(), dl_error()));
    }
    Ok(f)
}

/// The file the loader actually opened for a symbol (for `libnccl.so.2` found on its path).
fn loaded_from(f: *mut c_void, asked: &str) -> String {
    // SAFETY: an all-zero Dl_info is valid (null pointers); dladdr fills it for a mapped address.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `f` is an address inside the loaded library.
    if unsafe { libc::dladdr(f, &mut info) } != 0 && !info.dli_fname.is_null() {
        // SAFETY: non-null, NUL-terminated, owned by the loader.
        return unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
    }
    asked.to_string()
}

/// NCCL_VERSION_CODE as (major, minor, patch): X*1000+Y*100+Z before 2.9, X*10000+Y*100+Z since.
pub fn decode_version(code: u32) -> (u32, u32, u32) {
    if code >= 10000 {
        (code / 10000, code % 10000 / 100, code % 100)
    } else {
        (code / 1000, code % 1000 / 100, code % 100)
    }
}

fn resolve(handle: *mut c_void, asked: &str) -> std::result::Result<Api, String> {
    let sym = |name: &CStr| symbol(handle, name, asked);
    let get_version = sym(c"ncclGetVersion")?;
    // SAFETY (all transmutes): each symbol is NCCL's function of that name, whose C signature
    // the target type spells out.
    let api = unsafe {
        Api {
            path: loaded_from(get_version, asked),
            version: (0, 0, 0),
            get_unique_id: std::mem::transmute::<*mut c_void, GetUniqueId>(sym(c"ncclGetUniqueId")?),
            comm_init_rank: std::mem::transmute::<*mut c_void, CommInitRank>(sym(c"ncclCommInitRank")?),
            all_reduce: std::mem::transmute::<*mut c_void, AllReduce>(sym(c"ncclAllReduce")?),
            comm_destroy: std::mem::transmute::<*mut c_void, CommClose>(sym(c"ncclCommDestroy")?),
            comm_abort: std::mem::transmute::<*mut c_void, CommClose>(sym(c"ncclCommAbort")?),
            get_error_string: std::mem::transmute::<*mut c_void, GetErrorString>(sym(c"ncclGetErrorString")?),
            comm_get_async_error: std::mem::transmute::<*mut c_void, CommGetAsyncError>(sym(c"ncclCommGetAsyncError")?),
        }
    };
    // SAFETY: as above.
    let get_version = unsafe { std::mem::transmute::<*mut c_void, GetVersion>(get_version) };
    let mut code: c_int = 0;
    // SAFETY: see above; `code` outlives the call.
    let r = unsafe { get_version(&mut code) };
    if r != 0 {
        return Err(format!("{}: ncclGetVersion failed ({r})", api.path));
    }
    Ok(Api { version: decode_version(code.max(0) as u32), ..api })
}

impl Api {
    /// Ok, or an error with NCCL's own words for `r` and how to learn more.
    fn check(&self, what: &str, r: NcclResult) -> Result<()> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        let text = unsafe {
            let s = (self.get_error_string)(r);
            if s.is_null() {
                "unknown".into()
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        };
        let msg = format!("{what} failed: {text} (ncclResult {r}); NCCL_DEBUG=WARN prints NCCL's own reason");
        Err(Error::Device { op: OP, device: Device::Cuda, msg })
    }
}

/// A new unique id (rank 0 makes it; NCCL starts its bootstrap listener here).
pub fn unique_id() -> Result<[u8; ID_BYTES]> {
    let api = api()?;
    let mut id = UniqueId { internal: [0; ID_BYTES] };
    // SAFETY: writes one ncclUniqueId into `id`.
    api.check("ncclGetUniqueId", unsafe { (api.get_unique_id)(&mut id) })?;
    Ok(id.internal)
}

/// One process's member of a communicator of `world` processes, one GPU each (this
/// process's GPU: the engine's device 0), working on the engine's stream.
pub struct Comm {
    raw: RawComm,
    rank: usize,
    world: usize,
}

impl Comm {
    /// Join the communicator of `id` as `rank` of `world`. Blocks until every rank has
    /// joined: the caller must watch for ranks that never come.
    pub fn join(world: usize, rank: usize, id: &[u8; ID_BYTES]) -> Result<Comm> {
        if rank >= world || world > c_int::MAX as usize {
            let msg = format!("rank {rank} of {world}: a rank must be below the number of ranks");
            return Err(Error::Device { op: OP, device: Device::Cuda, msg });
        }
        let api = api()?;
        gpu(OP)?; // NCCL joins the context current on this thread: the engine's
        let mut raw: RawComm = std::ptr::null_mut();
        let id = UniqueId { internal: *id };
        // SAFETY: `raw` receives the communicator; the id is passed by value as nccl.h says.
        api.check("ncclCommInitRank", unsafe { (api.comm_init_rank)(&mut raw, world as c_int, id, rank as c_int) })?;
        Ok(Comm { raw, rank, world })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Replace contiguous `t` (f32 or f64, on the GPU) by its sum over the ranks, in place,
    /// queued on the engine's stream after everything before it (like a kernel launch).
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        let dtype = match t.dtype() {
            DType::F32 => NCCL_FLOAT32,
            DType::F64 => NCCL_FLOAT64,
            other => return Err(Error::Unsupported { op: OP, device: Device::Cuda, dtype: other }),
        };
        if t.device() != Device::Cuda || !t.is_contiguous() {
            let msg = format!("all-reduce needs a contiguous GPU tensor, got one on {}", t.device());
            return Err(Error::Invalid { op: OP, msg });
        }
        let (api, stream) = (api()?, gpu(OP)?.stream.as_inner());
        // As in copy_within: the lock guards the buffer's identity; the write goes through the stream.
        let guard = t.read();
        let bytes = guard.as_cuda(OP)?.bytes(OP, t.layout.offset, t.numel())?;
        let ptr = bytes.as_device_ptr().as_raw() as *mut c_void;
        // SAFETY: `ptr` spans t.numel() elements of `dtype` in a live buffer (checked by
        // `bytes`); in place (send = receive) is allowed; the stream is the engine's.
        let r = unsafe { (api.all_reduce)(ptr, ptr, t.numel(), dtype, NCCL_SUM, self.raw, stream.cast()) };
        api.check("ncclAllReduce", r)
    }

    /// An error NCCL met in the background (a peer's network connection lost, ...), if any.
    pub fn async_error(&self) -> Result<()> {
        let api = api()?;
        let mut state: NcclResult = 0;
        // SAFETY: a live communicator; writes one int.
        api.check("ncclCommGetAsyncError", unsafe { (api.comm_get_async_error)(self.raw, &mut state) })?;
        if state == NCCL_IN_PROGRESS {
            return Ok(());
        }
        api.check("a collective (ncclCommGetAsyncError)", state)
    }

    /// Tear the communicator down without waiting for its peers (after an error).
    pub fn abort(mut self) {
        if let Ok(api) = api() {
            // SAFETY: a live communicator, nulled so that Drop does not destroy it again.
            unsafe { (api.comm_abort)(std::mem::replace(&mut self.raw, std::ptr::null_mut())) };
        }
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        if self.raw.is_null() {
            return;
        }
        // Queued all-reduces use the communicator: let them finish first.
        let _ = gpu(OP).map(|g| g.stream.synchronize().map_err(err(OP)));
        if let Ok(api) = api() {
            // SAFETY: a live communicator made in `join`, destroyed once.
            unsafe { (api.comm_destroy)(self.raw) };
        }
    }
}

/// GPUs this process can see (after CUDA_VISIBLE_DEVICES), counted by the driver.
pub fn visible_gpus() -> Result<usize> {
    use mamba_kernels::cust;
    cust::init(cust::CudaFlags::empty()).map_err(err("count GPUs"))?;
    Ok(cust::device::Device::num_devices().map_err(err("count GPUs"))? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_decode_both_schemes() {
        assert_eq!(decode_version(22703), (2, 27, 3));
        assert_eq!(decode_version(2804), (2, 8, 4));
    }

    #[test]
    fn a_library_not_found_says_what_was_tried() {
        let env = |k: &str| (k == "MAMBA_NCCL_LIB").then(|| "/nonexistent/libnccl.so.2".to_string());
        let msg = search(env).err().unwrap_or_default();
        assert!(msg.starts_with("cannot load NCCL (libnccl.so.2), which --gpus needs: MAMBA_NCCL_LIB"), "{msg}");
        assert!(msg.contains("Tried /nonexistent/libnccl.so.2: "), "{msg}");
        // Without it: the loader's path, then the wheel folders (when this machine has no NCCL).
        if let Err(msg) = search(|k| (k == "HOME").then(|| "/nonexistent-home".to_string())) {
            assert!(msg.contains("Tried libnccl.so.2: ") && msg.contains("pip install nvidia-nccl-cu13"), "{msg}");
            let searched = "searched nvidia/nccl/lib/libnccl.so.2 and nvidia/cu13/lib/libnccl.so.2 under \
                            /usr/local/lib/python3*/dist-packages, ";
            assert!(
                msg.contains(searched) && msg.ends_with("/nonexistent-home/.local/lib/python3*/site-packages"),
                "{msg}"
            );
        }
    }

    #[test]
    fn wheel_patterns_expand_python_folders() {
        let root = std::env::temp_dir().join(format!("nccl-glob-{}", std::process::id()));
        let lib = root.join("lib/python3.12/site-packages/nvidia/nccl/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libnccl.so.2"), b"").unwrap();
        std::fs::create_dir_all(root.join("lib/python3.11/site-packages")).unwrap();
        let venv = root.to_str().unwrap();
        let patterns = wheel_patterns(&wheel_roots(Some("/nonexistent-home"), Some(venv), None));
        assert!(patterns
            .iter()
            .any(|p| p == "/nonexistent-home/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2"));
        let found: Vec<PathBuf> = patterns.iter().flat_map(|p| expand(p)).collect();
        assert_eq!(found, [lib.join("libnccl.so.2")]);
        assert!(expand("/nonexistent/python3*/x").is_empty());
        let _ = std::fs::remove_dir_all(root);
    }
}
