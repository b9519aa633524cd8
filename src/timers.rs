//! The timer heap behind `call_later`/`call_at`.
//!
//! One min-heap ordered by `(when, sequence)`, so timers fire in deadline
//! order and ties in scheduling order. Cancelled timers stay in the heap
//! until they reach the top or until they are more than half of a heap
//! bigger than 100 entries, when the heap is rebuilt without them: the same
//! rule as CPython's `BaseEventLoop._run_once`, so a million cancelled timers
//! do not leak. Payloads say whether they were cancelled through
//! [`TimerPayload`], which keeps this module free of Python and testable with
//! `cargo test`.
//!
//! The heap is 4-ary, not binary: with 100k timers the entries span a few
//! MiB, and every level a pop walks down is a cache miss. Four children
//! side by side halve the levels for about the same comparisons. For the
//! same reason [`TimerHeap::pop_due`] does not look at the payloads it hands
//! out (see there).

use std::cmp::Ordering;

/// Heaps smaller than this are never compacted (asyncio's
/// `_MIN_SCHEDULED_TIMER_HANDLES`).
const MIN_SCHEDULED_FOR_COMPACTION: usize = 100;
/// Compact once more than this fraction is cancelled
/// (asyncio's `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`).
const CANCELLED_FRACTION_FOR_COMPACTION: f64 = 0.5;
/// Children per node.
const ARITY: usize = 4;

/// What the heap needs to know about the thing it schedules.
pub trait TimerPayload {
    fn is_cancelled(&self) -> bool;
    /// Called when the heap drops the entry as cancelled (or is cleared).
    /// Entries popped by `pop_due` are not told: see there.
    fn unscheduled(&self);
}

struct Entry<T> {
    when: f64,
    seq: u64,
    payload: T,
}

impl<T> Entry<T> {
    /// Fires before `other`.
    fn before(&self, other: &Self) -> bool {
        self.when
            .total_cmp(&other.when)
            .then_with(|| self.seq.cmp(&other.seq))
            == Ordering::Less
    }
}

pub struct TimerHeap<T> {
    /// `entries[0]` fires first; the children of `i` are `4i+1..=4i+4`.
    entries: Vec<Entry<T>>,
    next_seq: u64,
    cancelled: usize,
}

impl<T: TimerPayload> Default for TimerHeap<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TimerPayload> TimerHeap<T> {
    pub fn new() -> Self {
        TimerHeap {
            entries: Vec::new(),
            next_seq: 0,
            cancelled: 0,
        }
    }

    pub fn push(&mut self, when: f64, payload: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push(Entry { when, seq, payload });
        self.sift_up(self.entries.len() - 1);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A scheduled timer was cancelled; counts towards compaction.
    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// A timer `pop_due` handed out turned out cancelled when the caller
    /// took it up: it no longer counts towards compaction.
    pub fn cancelled_left_heap(&mut self) {
        self.cancelled = self.cancelled.saturating_sub(1);
    }

    /// Drop cancelled timers: all of them when they dominate the heap,
    /// otherwise just those at the top, so `next_deadline` is a live timer.
    /// The removed payloads go to `graveyard` so the caller can release them
    /// after unlocking (dropping a Python object may run arbitrary code).
    pub fn drop_cancelled(&mut self, graveyard: &mut Vec<T>) {
        let len = self.entries.len();
        if len > MIN_SCHEDULED_FOR_COMPACTION
            && self.cancelled as f64 / len as f64 > CANCELLED_FRACTION_FOR_COMPACTION
        {
            let entries = std::mem::take(&mut self.entries);
            let mut live = Vec::with_capacity(len - self.cancelled.min(len));
            for e in entries {
                if e.payload.is_cancelled() {
                    e.payload.unscheduled();
                    graveyard.push(e.payload);
                } else {
                    live.push(e);
                }
            }
            self.entries = live;
            for i in (0..self.entries.len() / ARITY + 1).rev() {
                self.sift_down(i);
            }
            self.cancelled = 0;
        } else {
            while let Some(top) = self.entries.first() {
                if !top.payload.is_cancelled() {
                    break;
                }
                let entry = self.pop().expect("peeked");
                entry.payload.unscheduled();
                self.cancelled = self.cancelled.saturating_sub(1);
                graveyard.push(entry.payload);
            }
        }
    }

    /// Deadline of the earliest timer (which may be cancelled unless
    /// `drop_cancelled` ran just before).
    pub fn next_deadline(&self) -> Option<f64> {
        self.entries.first().map(|e| e.when)
    }

    /// Pop every timer due before `end_time`, in firing order, into `out`.
    ///
    /// The payloads are not looked at: the caller marks each one unscheduled
    /// (and calls [`Self::cancelled_left_heap`] for a cancelled one) when it
    /// takes it up to run it. When many timers are due at once, touching
    /// each here and again when it runs would cost two cache misses per
    /// timer. Cancelled ones are passed along too: the ready queue skips
    /// them, as asyncio's does.
    pub fn pop_due(&mut self, end_time: f64, mut out: impl FnMut(T)) {
        while let Some(top) = self.entries.first() {
            if top.when >= end_time {
                break;
            }
            out(self.pop().expect("peeked").payload);
        }
    }

    /// Every scheduled payload, in no particular order (for the GC).
    pub fn payloads(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.payload)
    }

    /// Remove everything (loop close).
    pub fn clear(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| {
                e.payload.unscheduled();
                e.payload
            })
            .collect()
    }

    fn pop(&mut self) -> Option<Entry<T>> {
        let last = self.entries.pop()?;
        if self.entries.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.entries[0], last);
        self.sift_down(0);
        Some(top)
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if !self.entries[i].before(&self.entries[parent]) {
                break;
            }
            self.entries.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let len = self.entries.len();
        loop {
            let first = ARITY * i + 1;
            if first >= len {
                break;
            }
            let mut best = first;
            for child in first + 1..(first + ARITY).min(len) {
                if self.entries[child].before(&self.entries[best]) {
                    best = child;
                }
            }
            if !self.entries[best].before(&self.entries[i]) {
                break;
            }
            self.entries.swap(i, best);
            i = best;
        }
    }
}

impl<T: TimerPayload> crate::counted_mutex::Len for TimerHeap<T> {
    fn len(&self) -> usize {
        TimerHeap::len(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct Fake {
        id: u32,
        cancelled: Rc<Cell<bool>>,
        scheduled: Rc<Cell<bool>>,
    }

    impl Fake {
        fn new(id: u32) -> Self {
            Fake {
                id,
                cancelled: Rc::new(Cell::new(false)),
                scheduled: Rc::new(Cell::new(true)),
            }
        }
    }

    impl TimerPayload for Fake {
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
        fn unscheduled(&self) {
            self.scheduled.set(false);
        }
    }

    fn drain(heap: &mut TimerHeap<Fake>, end: f64) -> Vec<u32> {
        let mut out = Vec::new();
        heap.pop_due(end, |f| out.push(f.id));
        out
    }

    #[test]
    fn fires_in_deadline_order_ties_in_schedule_order() {
        let mut heap = TimerHeap::new();
        heap.push(2.0, Fake::new(1));
        heap.push(1.0, Fake::new(2));
        heap.push(2.0, Fake::new(3));
        heap.push(1.0, Fake::new(4));
        heap.push(9.0, Fake::new(5));
        assert_eq!(drain(&mut heap, 5.0), vec![2, 4, 1, 3]);
        assert_eq!(heap.next_deadline(), Some(9.0));
    }

    #[test]
    fn end_time_is_exclusive() {
        let mut heap = TimerHeap::new();
        heap.push(1.0, Fake::new(1));
        assert!(drain(&mut heap, 1.0).is_empty());
        assert_eq!(drain(&mut heap, 1.0 + 1e-9), vec![1]);
    }

    #[test]
    fn cancelled_at_top_are_dropped() {
        let mut heap = TimerHeap::new();
        let a = Fake::new(1);
        heap.push(1.0, a.clone());
        heap.push(2.0, Fake::new(2));
        a.cancelled.set(true);
        heap.note_cancelled();
        heap.drop_cancelled(&mut Vec::new());
        assert_eq!(heap.next_deadline(), Some(2.0));
        assert!(!a.scheduled.get());
        assert_eq!(heap.len(), 1);
    }

    #[test]
    fn compaction_removes_cancelled_everywhere() {
        let mut heap = TimerHeap::new();
        let mut all = Vec::new();
        for i in 0..1000 {
            let f = Fake::new(i);
            heap.push(i as f64, f.clone());
            all.push(f);
        }
        // Cancel all but the first: top stays live, so only compaction helps.
        for f in &all[1..] {
            f.cancelled.set(true);
            heap.note_cancelled();
        }
        heap.drop_cancelled(&mut Vec::new());
        assert_eq!(heap.len(), 1);
        assert!(!all[500].scheduled.get());
        assert!(all[0].scheduled.get());
    }

    #[test]
    fn small_heaps_are_not_compacted() {
        let mut heap = TimerHeap::new();
        let live = Fake::new(0);
        heap.push(0.0, live);
        for i in 1..50 {
            let f = Fake::new(i);
            f.cancelled.set(true);
            heap.push(i as f64, f);
            heap.note_cancelled();
        }
        heap.drop_cancelled(&mut Vec::new());
        assert_eq!(heap.len(), 50);
    }

    #[test]
    fn many_timers_pop_in_order() {
        // A fixed pseudo-random sequence with many ties.
        let mut heap = TimerHeap::new();
        let mut x: u64 = 12345;
        let mut expected = Vec::new();
        for i in 0..5000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let when = ((x >> 33) % 700) as f64;
            heap.push(when, Fake::new(i));
            expected.push((when, i));
        }
        expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<u32> = expected.iter().map(|e| e.1).collect();
        assert_eq!(drain(&mut heap, f64::INFINITY), want);
    }

    #[test]
    fn compaction_keeps_order() {
        let mut heap = TimerHeap::new();
        let mut all = Vec::new();
        for i in 0..1000u32 {
            let f = Fake::new(i);
            heap.push(((i * 7919) % 1000) as f64, f.clone());
            all.push(f);
        }
        for f in all.iter().filter(|f| f.id % 3 != 0) {
            f.cancelled.set(true);
            heap.note_cancelled();
        }
        heap.drop_cancelled(&mut Vec::new());
        let got = drain(&mut heap, f64::INFINITY);
        let mut want: Vec<u32> = (0..1000).filter(|i| i % 3 == 0).collect();
        want.sort_by_key(|i| (i * 7919) % 1000);
        assert_eq!(got, want);
    }

    #[test]
    fn clear_empties() {
        let mut heap = TimerHeap::new();
        heap.push(1.0, Fake::new(1));
        assert_eq!(heap.clear().len(), 1);
        assert!(heap.is_empty());
    }
}
