//! A mutex-protected collection whose length can be read without the lock.
//!
//! Each loop iteration asks "is anything ready? any fd events? any timers?"
//! several times, and most answers are "no". Taking a lock for each answer
//! costs two atomic read-modify-writes; reading a length published by the
//! last writer costs a plain load. The published length is a hint for the
//! loop thread's own fast path: it is exact for what that thread wrote
//! itself, and a push from another thread may show up one check late, so
//! decisions that must not miss one (parking) still look under the lock.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

/// A collection with a length.
pub trait Len {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Len for std::collections::VecDeque<T> {
    fn len(&self) -> usize {
        std::collections::VecDeque::len(self)
    }
}

impl<T> Len for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

pub struct CountedMutex<T: Len> {
    inner: Mutex<T>,
    len: AtomicUsize,
}

impl<T: Len> CountedMutex<T> {
    pub fn new(value: T) -> Self {
        let len = AtomicUsize::new(value.len());
        CountedMutex {
            inner: Mutex::new(value),
            len,
        }
    }

    pub fn lock(&self) -> CountedGuard<'_, T> {
        CountedGuard {
            guard: self.inner.lock(),
            len: &self.len,
        }
    }

    pub fn try_lock(&self) -> Option<CountedGuard<'_, T>> {
        Some(CountedGuard {
            guard: self.inner.try_lock()?,
            len: &self.len,
        })
    }

    /// The length the last writer left, without locking (see the module doc
    /// for when that is exact).
    pub fn len_hint(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// The lock guard; publishes the new length when dropped.
pub struct CountedGuard<'a, T: Len> {
    guard: MutexGuard<'a, T>,
    len: &'a AtomicUsize,
}

impl<T: Len> Deref for CountedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: Len> DerefMut for CountedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: Len> Drop for CountedGuard<'_, T> {
    fn drop(&mut self) {
        // Before the unlock (the guard field drops after this body), so the
        // next holder of the lock always sees the length it left.
        self.len.store(self.guard.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_follows_writes() {
        let queue = CountedMutex::new(Vec::new());
        assert_eq!(queue.len_hint(), 0);
        queue.lock().push(1);
        queue.lock().push(2);
        assert_eq!(queue.len_hint(), 2);
        let taken = std::mem::take(&mut *queue.lock());
        assert_eq!(taken, vec![1, 2]);
        assert_eq!(queue.len_hint(), 0);
        queue.try_lock().expect("unlocked").push(3);
        assert_eq!(queue.len_hint(), 1);
    }

    #[test]
    fn try_lock_fails_while_locked() {
        let queue = CountedMutex::new(Vec::<u8>::new());
        let held = queue.lock();
        assert!(queue.try_lock().is_none());
        drop(held);
        assert!(queue.try_lock().is_some());
    }
}
