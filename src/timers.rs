//! The timer heap behind `call_later`/`call_at`.
//!
//! One binary min-heap ordered by `(when, sequence)`, so timers fire in
//! deadline order and ties in scheduling order. Cancelled timers stay in the
//! heap until they reach the top or until they are more than half of a heap
//! bigger than 100 entries, when the heap is rebuilt without them: the same
//! rule as CPython's `BaseEventLoop._run_once`, so a million cancelled timers
//! do not leak. Payloads say whether they were cancelled through
//! [`TimerPayload`], which keeps this module free of Python and testable with
//! `cargo test`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Heaps smaller than this are never compacted (asyncio's
/// `_MIN_SCHEDULED_TIMER_HANDLES`).
const MIN_SCHEDULED_FOR_COMPACTION: usize = 100;
/// Compact once more than this fraction is cancelled
/// (asyncio's `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`).
const CANCELLED_FRACTION_FOR_COMPACTION: f64 = 0.5;

/// What the heap needs to know about the thing it schedules.
pub trait TimerPayload {
    fn is_cancelled(&self) -> bool;
    /// Called when the entry leaves the heap (fired or dropped as cancelled).
    fn unscheduled(&self);
}

struct Entry<T> {
    when: f64,
    seq: u64,
    payload: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed so std's max-heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
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
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: 0,
        }
    }

    pub fn push(&mut self, when: f64, payload: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, payload });
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// A scheduled timer was cancelled; counts towards compaction.
    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Drop cancelled timers: all of them when they dominate the heap,
    /// otherwise just those at the top, so `next_deadline` is a live timer.
    /// The removed payloads go to `graveyard` so the caller can release them
    /// after unlocking (dropping a Python object may run arbitrary code).
    pub fn drop_cancelled(&mut self, graveyard: &mut Vec<T>) {
        let len = self.heap.len();
        if len > MIN_SCHEDULED_FOR_COMPACTION
            && self.cancelled as f64 / len as f64 > CANCELLED_FRACTION_FOR_COMPACTION
        {
            let entries = std::mem::take(&mut self.heap).into_vec();
            let mut live = Vec::with_capacity(len - self.cancelled.min(len));
            for e in entries {
                if e.payload.is_cancelled() {
                    e.payload.unscheduled();
                    graveyard.push(e.payload);
                } else {
                    live.push(e);
                }
            }
            self.heap = BinaryHeap::from(live);
            self.cancelled = 0;
        } else {
            while let Some(top) = self.heap.peek() {
                if !top.payload.is_cancelled() {
                    break;
                }
                let entry = self.heap.pop().expect("peeked");
                entry.payload.unscheduled();
                self.cancelled = self.cancelled.saturating_sub(1);
                graveyard.push(entry.payload);
            }
        }
    }

    /// Deadline of the earliest timer (which may be cancelled unless
    /// `drop_cancelled` ran just before).
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pop every timer due before `end_time`, in firing order, into `out`.
    /// Cancelled ones are passed along too: the ready queue skips them, as
    /// asyncio's does.
    pub fn pop_due(&mut self, end_time: f64, mut out: impl FnMut(T)) {
        while let Some(top) = self.heap.peek() {
            if top.when >= end_time {
                break;
            }
            let entry = self.heap.pop().expect("peeked");
            entry.payload.unscheduled();
            if entry.payload.is_cancelled() {
                self.cancelled = self.cancelled.saturating_sub(1);
            }
            out(entry.payload);
        }
    }

    /// Every scheduled payload, in no particular order (for the GC).
    pub fn payloads(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.payload)
    }

    /// Remove everything (loop close).
    pub fn clear(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|e| {
                e.payload.unscheduled();
                e.payload
            })
            .collect()
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
    fn clear_empties() {
        let mut heap = TimerHeap::new();
        heap.push(1.0, Fake::new(1));
        assert_eq!(heap.clear().len(), 1);
        assert!(heap.is_empty());
    }
}
