//! `GilCell`: state that is only ever touched with the GIL held, guarded by
//! the GIL instead of a mutex.
//!
//! A handle's callback and the loop's ready queue are read and written only
//! by code that holds the GIL (Python calls into the loop, the loop running
//! callbacks, the cyclic GC). A `parking_lot::Mutex` around them costs two
//! atomic read-modify-writes per access for nothing; this cell costs a
//! plain load and two plain stores.
//!
//! Soundness rests on two things:
//! - every access takes a `Python<'_>` token, which proves the calling
//!   thread holds the GIL (the module is declared `gil_used = true`, so
//!   importing it on a free-threaded build turns the GIL back on), so two
//!   threads never run this code at the same time, and a GIL hand-off
//!   orders one thread's writes before the next one's reads;
//! - a borrow flag, because the GIL can change hands *inside* a borrow: if
//!   Python code runs while the borrow is open (a decref that frees an
//!   object with `__del__`, a call), the interpreter may switch threads, or
//!   that code may come back into the loop. A second borrow then panics
//!   instead of aliasing. Callers keep borrows short and drop Python
//!   objects only after the borrow ends, so this never fires in practice.
//!
//! The guard is `!Send`, so it cannot be moved into a closure that runs
//! without the GIL (`Python::detach` requires `Send`).

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use pyo3::Python;

pub struct GilCell<T> {
    value: UnsafeCell<T>,
    borrowed: Cell<bool>,
}

// SAFETY: the value and the flag are only reached through `borrow_mut`/
// `try_borrow_mut`, which require a `Python` token, i.e. the GIL: threads
// take turns, and each GIL hand-off is a synchronisation point (the GIL is a
// mutex), so the plain `Cell` flag and the value are never accessed
// concurrently. The value moves between threads that way, hence `T: Send`.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        GilCell {
            value: UnsafeCell::new(value),
            borrowed: Cell::new(false),
        }
    }

    /// Exclusive access for the duration of the guard.
    ///
    /// # Panics
    /// If the cell is already borrowed (re-entry from Python code run inside
    /// a borrow, on this thread or another one after a GIL switch).
    #[inline]
    pub fn borrow_mut<'a>(&'a self, py: Python<'a>) -> GilRefMut<'a, T> {
        match self.try_borrow_mut(py) {
            Some(guard) => guard,
            None => panic!("GilCell borrowed twice"),
        }
    }

    /// As `borrow_mut`, or `None` if the cell is borrowed right now (for the
    /// GC's traversal, which must not fail).
    #[inline]
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'a>) -> Option<GilRefMut<'a, T>> {
        if self.borrowed.replace(true) {
            return None;
        }
        Some(GilRefMut {
            cell: self,
            _not_send: PhantomData,
        })
    }

    /// Access through `&mut self`: no other reference exists.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// The borrow; clears the flag when dropped.
pub struct GilRefMut<'a, T> {
    cell: &'a GilCell<T>,
    /// `!Send`: the guard must stay on the thread that holds the GIL.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for GilRefMut<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the flag we set in `try_borrow_mut` excludes every other
        // borrow until this guard drops (see the module doc).
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for GilRefMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // derived from the guard.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for GilRefMut<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.cell.borrowed.set(false);
    }
}
