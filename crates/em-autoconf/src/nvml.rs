//! NVIDIA GPUs through NVML (`libnvidia-ml.so.1`, part of the driver), loaded at run time so
//! that the crate builds and runs where there is no driver: then the answer is "no GPU" with
//! the reason, never an error.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};

use crate::probe::Gpu;

type Device = *mut c_void;
type Status = c_int;

#[repr(C)]
#[derive(Default)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// The library file names to try, most specific first.
const LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// Lists every GPU NVML sees (before `CUDA_VISIBLE_DEVICES`), or why it cannot.
pub(crate) fn gpus() -> Result<Vec<Gpu>, String> {
    // SAFETY: the NVML symbols are looked up by their documented names and called with the
    // documented signatures; buffers are sized and NUL-terminated as NVML requires, and the
    // library outlives every call (it is dropped at the end of this function).
    unsafe {
        let lib = LIBRARIES
            .iter()
            .find_map(|name| libloading::Library::new(name).ok())
            .ok_or("no NVML library (libnvidia-ml.so.1): no NVIDIA driver")?;
        let sym = |name: &[u8]| -> Result<*const c_void, String> {
            lib.get::<*const c_void>(name)
                .map(|s| *s)
                .map_err(|e| format!("NVML lacks {}: {e}", String::from_utf8_lossy(name)))
        };
        let init: extern "C" fn() -> Status = std::mem::transmute(sym(b"nvmlInit_v2\0")?);
        let shutdown: extern "C" fn() -> Status = std::mem::transmute(sym(b"nvmlShutdown\0")?);
        let count: extern "C" fn(*mut c_uint) -> Status =
            std::mem::transmute(sym(b"nvmlDeviceGetCount_v2\0")?);
        let handle: extern "C" fn(c_uint, *mut Device) -> Status =
            std::mem::transmute(sym(b"nvmlDeviceGetHandleByIndex_v2\0")?);
        let name: extern "C" fn(Device, *mut c_char, c_uint) -> Status =
            std::mem::transmute(sym(b"nvmlDeviceGetName\0")?);
        let uuid: extern "C" fn(Device, *mut c_char, c_uint) -> Status =
            std::mem::transmute(sym(b"nvmlDeviceGetUUID\0")?);
        let memory: extern "C" fn(Device, *mut Memory) -> Status =
            std::mem::transmute(sym(b"nvmlDeviceGetMemoryInfo\0")?);
        let capability: extern "C" fn(Device, *mut c_int, *mut c_int) -> Status =
            std::mem::transmute(sym(b"nvmlDeviceGetCudaComputeCapability\0")?);

        let status = init();
        if status != 0 {
            return Err(format!(
                "NVML did not start (status {status}): driver not loaded?"
            ));
        }
        let mut n: c_uint = 0;
        let result = if count(&mut n) != 0 {
            Err("NVML could not count the GPUs".to_string())
        } else {
            let mut out = Vec::new();
            for i in 0..n {
                let mut d: Device = std::ptr::null_mut();
                if handle(i, &mut d) != 0 {
                    // A GPU this process may not use (e.g. another container's).
                    continue;
                }
                let text = |f: extern "C" fn(Device, *mut c_char, c_uint) -> Status| {
                    let mut buf = [0 as c_char; 128];
                    if f(d, buf.as_mut_ptr(), buf.len() as c_uint) == 0 {
                        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
                    } else {
                        String::new()
                    }
                };
                let mut m = Memory::default();
                let (mut major, mut minor) = (0, 0);
                if memory(d, &mut m) != 0 || capability(d, &mut major, &mut minor) != 0 {
                    continue;
                }
                out.push(Gpu {
                    index: i as usize,
                    name: text(name),
                    memory_bytes: m.total,
                    free_bytes: m.free,
                    compute_capability: (major.max(0) as u32, minor.max(0) as u32),
                    uuid: text(uuid),
                });
            }
            Ok(out)
        };
        shutdown();
        result
    }
}
