//! Buffers for whole volumes (and whole outputs, e.g. label volumes). Reading a large file into fresh memory is dominated by page
//! faults (one per 4 KiB page); asking the kernel for transparent huge pages first, as numpy
//! does for its arrays, cuts them 512-fold and makes npy/TIFF reads 2–3× faster.

/// A zero-filled vector of `len` elements, backed by huge pages where the OS allows.
pub fn zeroed_vec<T: bytemuck::Zeroable + Clone>(len: usize) -> Vec<T> {
    // `vec![zeroed; n]` becomes calloc: for large sizes fresh, untouched pages, so the advice
    // below applies before the first fault.
    let v = vec![T::zeroed(); len];
    advise_huge_pages(&v);
    v
}

/// An empty vector with room for `capacity` elements, backed by huge pages where the OS
/// allows: for outputs filled by `push`/`extend` (no zeroing pass), where a fresh 4 KiB
/// page fault per 1024 floats would otherwise cost more than the work.
pub fn huge_vec<T>(capacity: usize) -> Vec<T> {
    let v = Vec::with_capacity(capacity);
    advise_range(v.as_ptr() as usize, capacity * std::mem::size_of::<T>());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &[T]) {
    advise_range(v.as_ptr() as usize, std::mem::size_of_val(v));
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _bytes: usize) {}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes < 2 * HUGE {
        return;
    }
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end > aligned {
        // SAFETY: madvise only changes how the kernel backs pages of a range this vector
        // owns; MADV_HUGEPAGE never alters contents. Failure (e.g. THP disabled) is harmless.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_v: &[T]) {}

/// A global allocator that counts live heap bytes and their high-water mark, for measuring
/// what a computation really holds (`#[global_allocator] static A: PeakAlloc = PeakAlloc::new();`).
/// Resident-set figures include freed pages the allocator keeps; this counts requests only.
#[derive(Debug, Default)]
pub struct PeakAlloc {
    live: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl PeakAlloc {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            live: std::sync::atomic::AtomicUsize::new(0),
            peak: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The most bytes live at once since the last [`PeakAlloc::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a new high-water mark at the current live bytes.
    pub fn reset_peak(&self) {
        self.peak
            .store(self.live(), std::sync::atomic::Ordering::Relaxed);
    }

    fn add(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.live.fetch_add(n, Relaxed) + n;
        self.peak.fetch_max(now, Relaxed);
    }

    fn sub(&self, n: usize) {
        self.live.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

// SAFETY: every call forwards to the system allocator with the caller's layout unchanged;
// the counters never touch the memory.
unsafe impl std::alloc::GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            self.add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        self.sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            self.sub(layout.size());
            self.add(new);
        }
        p
    }
}

/// This process's peak resident set size (Linux `VmHWM`), `None` where it is not reported.
pub fn peak_rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// Makes glibc's `malloc` keep freed memory for reuse instead of handing it back to the
/// system after every large tensor. A training step frees and allocates the same tensor
/// sizes over and over; with glibc's defaults each large allocation is a fresh `mmap` (or a
/// heap trimmed and regrown), whose pages fault in again, which costs about 8% of a CPU
/// training step. Call it once at the start of a program (the `em` CLI and the examples
/// do); it changes nothing on other C libraries. Returns whether the settings took.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; the values are in range
        // (the mmap threshold at glibc's 32 MiB maximum on 64-bit targets).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
