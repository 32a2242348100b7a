//! The CUDA driver's device list, and NVML (loaded at run time: it ships with the driver)
//! for the memory in use. NVML is opened once per process, on the first inventory, and kept:
//! the inventory runs at every launch and heartbeat.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Once, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{result, sys};

use super::{Gpu, GpuInfo};

pub(super) fn inventory() -> Vec<Gpu> {
    if let Err(e) = result::init() {
        let message = format!("the CUDA driver did not initialise ({e}): no GPUs");
        warn_once(&DRIVER_MISSING, &message);
        return Vec::new();
    }
    let count = result::device::get_count().unwrap_or(0).max(0);
    let nvml = NVML.get_or_init(Nvml::open);
    (0..count)
        .filter_map(|ordinal| {
            let dev = result::device::get(ordinal).ok()?;
            let attribute = |a| {
                // SAFETY: a valid device handle and a plain integer attribute.
                unsafe { result::device::get_attribute(dev, a) }.unwrap_or(0) as u32
            };
            let capability = (
                attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            );
            // SAFETY: a valid device handle.
            let total = unsafe { result::device::total_mem(dev) }.ok()? as u64;
            let used = nvml
                .as_ref()
                .and_then(|n| n.used(&pci_bus_id(dev)?))
                .unwrap_or(0);
            Some(Gpu {
                info: GpuInfo {
                    index: ordinal as usize,
                    name: result::device::get_name(dev).ok()?,
                    memory_total: total,
                    memory_used: used,
                },
                capability,
            })
        })
        .collect()
}

/// The inventory is read at every launch (and heartbeat): say what is missing once.
fn warn_once(once: &'static Once, message: &str) {
    once.call_once(|| tracing::warn!("{message}"));
}

static DRIVER_MISSING: Once = Once::new();
/// NVML, opened once (`None`: not installed or not initialised).
static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
static NVML_MISSING: Once = Once::new();

/// `0000:3b:00.0`: how NVML finds the same device (its own order can differ from CUDA's).
fn pci_bus_id(dev: sys::CUdevice) -> Option<String> {
    let mut buf = [0 as c_char; 32];
    // SAFETY: the buffer is 32 bytes and the driver writes a NUL-terminated id into it.
    let status = unsafe { sys::cuDeviceGetPCIBusId(buf.as_mut_ptr(), buf.len() as c_int, dev) };
    if status != sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    // SAFETY: NUL-terminated within the buffer (checked by a success status).
    let id = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(id.to_string_lossy().into_owned())
}

#[repr(C)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

type Init = unsafe extern "C" fn() -> c_uint;
type ByBusId = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_uint;
type MemoryInfo = unsafe extern "C" fn(*mut c_void, *mut Memory) -> c_uint;

/// The NVML calls we need, from `libnvidia-ml.so.1` (initialised once and never shut down:
/// it lives as long as the process).
struct Nvml {
    by_bus_id: ByBusId,
    memory_info: MemoryInfo,
}

impl Nvml {
    fn open() -> Option<Nvml> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the type
        // of its documented C signature (nvml.h).
        unsafe {
            let lib = libc::dlopen(
                c"libnvidia-ml.so.1".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            );
            if lib.is_null() {
                warn_once(
                    &NVML_MISSING,
                    "libnvidia-ml.so.1 not found: GPU memory in use is reported as 0",
                );
                return None;
            }
            let symbol = |name: &CStr| {
                let f = libc::dlsym(lib, name.as_ptr());
                (!f.is_null()).then_some(f)
            };
            let (Some(init), Some(by_bus_id), Some(memory_info)) = (
                symbol(c"nvmlInit_v2"),
                symbol(c"nvmlDeviceGetHandleByPciBusId_v2"),
                symbol(c"nvmlDeviceGetMemoryInfo"),
            ) else {
                libc::dlclose(lib);
                return None;
            };
            let init: Init = std::mem::transmute::<*mut c_void, Init>(init);
            if init() != 0 {
                libc::dlclose(lib);
                return None;
            }
            Some(Nvml {
                by_bus_id: std::mem::transmute::<*mut c_void, ByBusId>(by_bus_id),
                memory_info: std::mem::transmute::<*mut c_void, MemoryInfo>(memory_info),
            })
        }
    }

    /// Bytes in use on the device at `bus_id`.
    fn used(&self, bus_id: &str) -> Option<u64> {
        let bus_id = std::ffi::CString::new(bus_id).ok()?;
        let mut device = std::ptr::null_mut();
        let mut memory = Memory {
            total: 0,
            free: 0,
            used: 0,
        };
        // SAFETY: NVML is initialised; the pointers are valid for the calls.
        unsafe {
            if (self.by_bus_id)(bus_id.as_ptr(), &mut device) != 0 {
                return None;
            }
            if (self.memory_info)(device, &mut memory) != 0 {
                return None;
            }
        }
        Some(memory.used)
    }
}
