//! One recycled `bytes` object per loop, for small stream reads.
//!
//! A small read is copied from the scratch buffer into a `bytes` of its
//! size. Made new, a 1 KiB object costs glibc's malloc and free about 560
//! instructions: objects over 512 bytes are not pymalloc's, and chunks of
//! over 1 KiB miss glibc's per-thread cache. That is a sixth of a whole
//! protocol echo request. When `data_received` returns and the loop holds
//! the only reference to the object it passed, no one can see that object
//! again, so the loop keeps it and copies the next small read into it
//! instead of a new one: its length set to what came and its cached hash
//! cleared, as a new object would be. Nothing else is reused: an object
//! someone kept stays theirs, untouched.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::gil_cell::GilCell;
use crate::sock_io::SMALL_READ_SIZE;

/// A `bytes` from a read and how many bytes its allocation holds (what a
/// recycled object can hold again).
pub struct ReadBytes {
    pub bytes: Py<PyBytes>,
    pub capacity: usize,
}

/// The loop's spare object (see the module doc).
pub struct SpareBytes(GilCell<Option<ReadBytes>>);

impl Default for SpareBytes {
    fn default() -> Self {
        SpareBytes(GilCell::new(None))
    }
}

impl SpareBytes {
    /// A `bytes` holding `data`: the spare if it holds it without wasting
    /// more than half of its allocation, else a new one.
    pub fn bytes_of(&self, py: Python<'_>, data: &[u8]) -> ReadBytes {
        let n = data.len();
        let spare = {
            let mut slot = self.0.borrow_mut(py);
            match &*slot {
                Some(s) if n <= s.capacity && s.capacity <= 2 * n => slot.take(),
                _ => None,
            }
        };
        match spare {
            // SAFETY: the GIL is held; the spare is a live bytes object
            // whose only reference is ours (checked when it was kept, and
            // nothing has seen it since), so changing it is as safe as
            // filling a new one, and its allocation holds `capacity`
            // bytes plus the terminating NUL.
            Some(spare) => unsafe {
                debug_assert_eq!(ffi::Py_REFCNT(spare.bytes.as_ptr()), 1);
                let object = spare.bytes.as_ptr().cast::<ffi::PyBytesObject>();
                let sval = (*object).ob_sval.as_mut_ptr().cast::<u8>();
                std::ptr::copy_nonoverlapping(data.as_ptr(), sval, n);
                *sval.add(n) = 0;
                (*object).ob_base.ob_size = n as ffi::Py_ssize_t;
                #[allow(deprecated)] // still the hash cache on 3.10-3.13
                {
                    (*object).ob_shash = -1;
                }
                spare
            },
            None => ReadBytes {
                bytes: PyBytes::new(py, data).unbind(),
                capacity: n,
            },
        }
    }

    /// Keep `read` for a later read if the caller holds the only reference
    /// to it; otherwise just drop the caller's.
    pub fn give_back(&self, py: Python<'_>, read: ReadBytes) {
        // SAFETY: reading the reference count of a live object; the GIL is
        // held (`py`).
        let only_ours = unsafe { ffi::Py_REFCNT(read.bytes.as_ptr()) == 1 };
        // The largest object kept is what one small read takes at most.
        if !only_ours || read.capacity > SMALL_READ_SIZE {
            return;
        }
        let old = self.0.borrow_mut(py).replace(read);
        drop(old); // outside the borrow
    }
}
