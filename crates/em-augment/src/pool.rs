//! Per-thread recycling of volume buffers: a pipeline replaces each volume several times,
//! and fresh multi-megabyte allocations cost a page fault per 4 KiB (more than most
//! transforms' arithmetic). Buffers released by one transform feed the next, and the next
//! sample's, on the same loader thread.

use std::cell::RefCell;

/// Buffers smaller than this are not worth keeping.
const MIN_LEN: usize = 1 << 15;
/// Buffers kept per element type and thread.
const KEEP: usize = 6;

pub(crate) trait Pooled: Copy + 'static {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
                thread_local! {
                    static POOL: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
                }
                POOL.with(|p| f(&mut p.borrow_mut()))
            }
        }
    )*};
}
pooled!(f32, u32, u8);

/// An empty vector with room for `len` elements, recycled when one fits.
pub(crate) fn take<T: Pooled>(len: usize) -> Vec<T> {
    if len >= MIN_LEN {
        let reused = T::with_pool(|pool| {
            let i = pool
                .iter()
                .position(|v| v.capacity() >= len && v.capacity() <= 2 * len)?;
            Some(pool.swap_remove(i))
        });
        if let Some(mut v) = reused {
            v.clear();
            return v;
        }
    }
    em_core::huge_vec(len)
}

/// Hands a buffer back for reuse.
pub(crate) fn give<T: Pooled>(v: Vec<T>) {
    if v.capacity() >= MIN_LEN {
        T::with_pool(|pool| {
            if pool.len() < KEEP {
                pool.push(v);
            }
        });
    }
}

/// Hands an array's buffer back.
pub(crate) fn give_array<T: Pooled, D: ndarray::Dimension>(a: ndarray::Array<T, D>) {
    let (v, _) = a.into_raw_vec_and_offset();
    give(v);
}
