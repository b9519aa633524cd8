//! One turn of the loop, and the loop of turns: `drive` (the body of
//! `_run`), which polls or parks on the tokio runtime, dispatches fd events
//! and due timers, and runs the ready callbacks (`run_ready`), handing run
//! handles back to the spare pool (`retire`). The `Driver` (runtime, timer
//! fd, signal socket) lives here because only an iteration uses it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::runtime::Runtime;

use super::{LoopCore, Ready, Shared, SPARE_MAX, SPARE_MIN};
use crate::batch_context::BatchContext;
use crate::clock;
use crate::gil_park;
use crate::handles::{self, Handle};
use crate::loop_poll::{self, LoopPoller, RawEvents};
use crate::park::{self, WakeFlag, Wakeup};
use crate::pyrefs::refs;
use crate::sock_io;
use crate::timer_fd::TimerFd;
use crate::wakeup::SignalSocket;

/// While callbacks are queued, the loop polls I/O (a `block_on` and a
/// zero-timeout `epoll_wait`) only every few iterations instead of on each:
/// chains of ready callbacks (future round trips, task steps) then mostly
/// cost no syscall, while new I/O is still seen within
/// `BUSY_POLL_EVERY` iterations or `BUSY_POLL_INTERVAL` seconds, whichever
/// comes first (`..._NO_IO` when no fd is watched at all). An idle loop
/// always polls, and so do a run's first iteration and its last (stopping)
/// one, and so does the iteration after an fd was put on the reactor (a
/// reader added for an fd that is already readable runs in the next
/// iteration on the stock loop) or after this thread sent data through a
/// stream or datagram transport or `sock_sendall` (its peer may be watched
/// by this same loop; see `take_poll_notes`). Data that Python code writes
/// to an fd with a plain `socket.send` or `os.write` (or asyncio's own
/// `sock_sendto`) is not seen that way, and can be seen up to the pacing's
/// bound later than on the stock loop. Fds already known to be ready
/// (level-triggered re-checks) are dispatched on every iteration
/// regardless.
const BUSY_POLL_INTERVAL: f64 = 50e-6;
const BUSY_POLL_EVERY: u32 = 4;
/// With no fd watched at all (a loop that only runs callbacks, timers and
/// futures), a busy loop polls far less often: only the signal wake-up
/// socket could have news, and a signal still gets through within a
/// millisecond.
const BUSY_POLL_INTERVAL_NO_IO: f64 = 1e-3;
const BUSY_POLL_EVERY_NO_IO: u32 = 64;

/// The runtime and the signal socket registered with it. Taken out of the
/// loop while `_run` drives it, dropped on close.
pub(super) struct Driver {
    signals: SignalSocket,
    timer: TimerFd,
    /// Raised by the signal socket's readiness (see `park`).
    signal_flag: Arc<WakeFlag>,
    signal_waker: Waker,
    runtime: Option<Runtime>,
}

impl Driver {
    /// The driver of a new loop: `runtime` with the signal socket
    /// registered on it, and the timer fd in `poller` where the loop parks
    /// (else on the runtime too), all waking the loop through `wakeup`.
    pub(super) fn new(
        runtime: Runtime,
        wakeup: &Arc<Wakeup>,
        poller: &LoopPoller,
    ) -> PyResult<Self> {
        let parks_here = poller.parks_here();
        let (signals, timer) = {
            let _context = runtime.enter();
            (
                SignalSocket::new()?,
                TimerFd::new(wakeup.clone(), !parks_here)?,
            )
        };
        if parks_here {
            poller.add_timer(timer.raw_fd())?;
        }
        let signal_flag = WakeFlag::new(wakeup.clone());
        let signal_waker = Waker::from(signal_flag.clone());
        if signals.arm(&signal_waker) {
            signal_flag.raise();
        }
        Ok(Driver {
            signals,
            timer,
            signal_flag,
            signal_waker,
            runtime: Some(runtime),
        })
    }

    /// The fd that `signal.set_wakeup_fd` should write to.
    pub(super) fn signal_write_fd(&self) -> i32 {
        self.signals.write_fd()
    }

    pub(super) fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("runtime lives as long as the driver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A loop may be closed or collected while another loop's runtime is
        // driving this thread; a plain drop would panic there, and nothing
        // of ours needs waiting for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl LoopCore {
    /// Run the callbacks that are ready now; ones they schedule wait for the
    /// next iteration. On an escaping exception the rest stay queued, in
    /// order, ahead of anything scheduled meanwhile.
    pub(super) fn run_ready(slf: &Bound<'_, Self>, batch: &mut VecDeque<Ready>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let shared = &this.shared;
        std::mem::swap(&mut *shared.ready.borrow_mut(py), batch);
        if batch.is_empty() {
            return Ok(());
        }
        let (surplus, (slot, kept_context)) = {
            let mut spare = this.spare.borrow_mut(py);
            spare.cap = batch.len().clamp(SPARE_MIN, SPARE_MAX);
            let cap = spare.cap;
            // Checked first so that the usual iteration, with nothing to
            // trim, makes and drops no lists.
            let surplus = (spare.handles.len() > cap || spare.contexts.len() > cap).then(|| {
                let kept = cap.min(spare.handles.len());
                let handles = spare.handles.split_off(kept);
                (handles, spare.contexts.trim(cap))
            });
            let slot = spare.contexts.context_slot();
            (surplus, (slot, spare.batch_context.take()))
        };
        drop(surplus); // outside the borrow
        let debug = shared.debug();
        // Callbacks with private copies of a context run in one context
        // entered across them (see `batch_context`); not in debug mode,
        // where every handle takes asyncio's path.
        let mut batch_context = if debug {
            None
        } else {
            BatchContext::new(slot, kept_context)
        };
        let result = Self::run_batch(slf, batch, debug, batch_context.as_mut());
        match batch_context.map(|b| b.finish(py)).transpose() {
            Ok(kept) => {
                if let Some(kept) = kept.flatten() {
                    this.spare.borrow_mut(py).batch_context = Some(kept);
                }
                result
            }
            // The batch's own error first.
            Err(err) => result.and(Err(err)),
        }
    }

    /// `run_ready`'s loop over the batch.
    fn run_batch(
        slf: &Bound<'_, Self>,
        batch: &mut VecDeque<Ready>,
        debug: bool,
        mut batch_context: Option<&mut BatchContext>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let shared = &this.shared;
        while let Some(item) = batch.pop_front() {
            if let Ready::Native(h) = &item {
                shared.take_up(h.get());
            }
            let result = match (&item, batch_context.as_deref_mut()) {
                (Ready::Native(h), Some(context)) => context.run(h.bind(py)),
                (other, context) => match context.map(|c| c.leave(py)).transpose() {
                    Err(err) => Err(err),
                    Ok(_) => match other {
                        Ready::Native(h) if !debug => Handle::run(h.bind(py)),
                        Ready::Native(h) => run_debug(slf, h.bind(py).as_any()),
                        Ready::Foreign(h) => run_foreign(slf, h.bind(py), debug),
                        Ready::Io(t, direction) => t.on_ready(py, *direction),
                    },
                },
            };
            match item {
                Ready::Native(h) => this.retire(py, slf.as_ptr(), h),
                other => drop(other),
            }
            if let Err(err) = result {
                let mut ready = shared.ready.borrow_mut(py);
                while let Some(rest) = batch.pop_back() {
                    ready.push_front(rest);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// `run_forever` is returning: the queued handles that user code also
    /// holds become visible to the GC again, since the loop may now be
    /// dropped unclosed (see `handles::expose_if_shared`). Linear in the
    /// ready queue, which the next run works through anyway. Timers in the
    /// heap are left to `_expose_hidden_timers`: walking the heap here made
    /// every `run_until_complete` linear in the pending timers (600 us a run
    /// with 100k of them), and keeping them tracked made `call_later` 30%
    /// slower (the GC traversing them).
    pub(super) fn expose_shared_handles(&self, py: Python<'_>) {
        for item in self.shared.ready.borrow_mut(py).iter() {
            if let Ready::Native(h) = item {
                handles::expose_if_shared(py, h);
            }
        }
    }

    /// Let go of a handle that has run: into the spare pool if nothing else
    /// refers to it and the pool has room, otherwise released.
    pub(super) fn retire(&self, py: Python<'_>, this_loop: *mut ffi::PyObject, handle: Py<Handle>) {
        let room = {
            let spare = self.spare.borrow_mut(py);
            spare.handles.len() < spare.cap
        };
        if room {
            match handles::recycle(py, handle, this_loop) {
                Ok((handle, call)) => {
                    let mut spare = self.spare.borrow_mut(py);
                    spare.handles.push(handle);
                    // The context goes back to the pool if it can; the
                    // rest is dropped after the borrow (it may run Python).
                    let leftover = call.map(|call| {
                        let (func, args, context) = call.into_parts();
                        let cap = spare.cap;
                        (func, args, spare.contexts.give_back(py, context, cap))
                    });
                    drop(spare);
                    drop(leftover);
                }
                Err(handle) => handles::release(py, handle),
            }
        } else {
            handles::release(py, handle);
        }
    }

    pub(super) fn handle_signals(slf: &Bound<'_, Self>, driver: &Driver) -> PyResult<()> {
        let py = slf.py();
        let data = driver.signals.drain();
        // Drained: arm the flag's waker for the next signal.
        if driver.signals.arm(&driver.signal_waker) {
            driver.signal_flag.raise();
        }
        // Run Python-level signal handlers now (SIGINT's raises
        // KeyboardInterrupt here, out of run_forever).
        py.check_signals()?;
        if !data.is_empty() {
            slf.call_method1("_process_self_data", (PyBytes::new(py, &data),))?;
        }
        Ok(())
    }
}

fn run_debug(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    refs(py).run_handle_debug.bind(py).call1((slf, handle))?;
    Ok(())
}

fn run_foreign(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, PyAny>, debug: bool) -> PyResult<()> {
    if handle
        .getattr(intern!(handle.py(), "_cancelled"))?
        .is_truthy()?
    {
        return Ok(());
    }
    if debug {
        return run_debug(slf, handle);
    }
    handle.call_method0(intern!(handle.py(), "_run"))?;
    Ok(())
}

/// Whether anything since the last poll asks the next iteration to poll,
/// whatever the busy-poll pacing: an fd put on the reactor, or data sent by
/// this thread. Takes (clears) every such note, so a park, which polls,
/// also consumes them.
fn take_poll_notes(shared: &Shared) -> bool {
    // `|`, not `||`: both notes must be cleared.
    shared.take_registration() | sock_io::take_sent()
}

/// Poll for I/O: `timeout_ms` 0 looks without blocking, -1 parks (with
/// the GIL released) until something happens. Where the loop parks in its
/// own epoll instance, that is one `epoll_wait` there, and a `block_on` of
/// tokio only when tokio's reactor (nested in it) has events; otherwise
/// (see `loop_poll`) a `block_on` of tokio, then a look at the loop's
/// instance if tokio reported it readable. The native registrations' edges
/// queue their objects (`queue_polled`). Returns whether to poll again next
/// iteration because the batch was full; the watched fds whose callbacks
/// were queued, which may still be ready, are counted in
/// `LoopCore::rechecks`.
fn poll_io(
    slf: &Bound<'_, LoopCore>,
    driver: &Driver,
    raw: &mut RawEvents,
    timeout_ms: i32,
    transports_first: bool,
) -> PyResult<bool> {
    let this = slf.get();
    let poller = &*this.poller;
    if !poller.parks_here() {
        return poll_in_tokio(slf, driver, raw, timeout_ms, transports_first);
    }
    let waited = if timeout_ms == 0 {
        poller.wait(raw, 0)
    } else {
        gil_park::released(|| poller.wait(raw, timeout_ms))
    };
    let n = match waited {
        Ok(n) => n,
        // A signal: its Python handler runs now, as after a select.
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            slf.py().check_signals()?;
            0
        }
        Err(e) => return Err(crate::errors::os_error(e)),
    };
    let polled = this.queue_polled(slf.py(), &raw[..n], transports_first);
    if polled.timer {
        driver.timer.fired();
    }
    if polled.reactor {
        driver.runtime().block_on(park::poll_once());
    }
    this.rechecks.store(polled.watched, Ordering::Relaxed);
    Ok(polled.more)
}

/// `poll_io` where the loop's instance is nested in tokio's reactor (see
/// `loop_poll`): a `block_on` of tokio, then a look at the instance if
/// tokio reported it readable (every `block_on` is followed by that check,
/// which re-arms the report). tokio reports the instance edge-triggered, so
/// two things it does not report again are looked for first, and the loop
/// does not park while the instance has events: a level-triggered watch
/// (`fd_watch`) that stays ready, and events left by a look that filled its
/// batch.
fn poll_in_tokio(
    slf: &Bound<'_, LoopCore>,
    driver: &Driver,
    raw: &mut RawEvents,
    timeout_ms: i32,
    transports_first: bool,
) -> PyResult<bool> {
    let this = slf.get();
    let poller = &*this.poller;
    let mut n = 0;
    if poller.take_left_unread() || this.watched_fds.load(Ordering::Relaxed) > 0 {
        n = poller.wait(raw, 0).unwrap_or(0);
    }
    if timeout_ms == 0 || n > 0 {
        driver.runtime().block_on(park::poll_once());
    } else {
        driver.runtime().block_on(park::park(&this.shared.wakeup));
    }
    if poller.take_reactor_report() && n < raw.len() {
        // Edges since the first look; a watch reported then too is not
        // queued twice (it is level-triggered: the next poll sees it).
        let more = poller.wait(&mut raw[n..], 0).unwrap_or(0);
        poller.set_left_unread(n + more == raw.len());
        let mut kept = n;
        for i in n..n + more {
            let key = raw[i].u64;
            if !(loop_poll::is_watch_key(key) && raw[..n].iter().any(|e| e.u64 == key)) {
                raw[kept] = raw[i];
                kept += 1;
            }
        }
        n = kept;
    } else {
        poller.set_left_unread(n == raw.len());
    }
    let polled = this.queue_polled(slf.py(), &raw[..n], transports_first);
    this.rechecks.store(polled.watched, Ordering::Relaxed);
    Ok(polled.more)
}

/// Park until the next timer or anything else happens (see `poll_io`).
fn park(slf: &Bound<'_, LoopCore>, driver: &Driver, raw: &mut RawEvents) -> PyResult<bool> {
    let shared = &*slf.get().shared;
    // (The hint is exact here: timers are added with the GIL held, which
    // this thread holds.)
    let deadline = if shared.may_have_timers() {
        shared.timers.lock().next_deadline()
    } else {
        None
    };
    if let Some(when) = deadline {
        let now = clock::monotonic();
        // An overridden `time()` counts the time left from its own idea of
        // now, as asyncio's select timeout does.
        let when = match LoopCore::overridden_now(slf)? {
            Some(loop_now) => now + (when - loop_now).max(0.0),
            None => when,
        };
        driver.timer.expire_by(when, now)?;
    }
    // Only callbacks other threads queued meanwhile can be waiting: they
    // keep their place ahead of the I/O, as on the stock loop.
    poll_io(slf, driver, raw, -1, false)
}

/// The body of `run_forever`: iterate until `stop()`.
///
/// Each I/O poll is its own `block_on` (or none, see `poll_io`), and
/// callbacks run between them, outside the runtime's context: Python code
/// may then start another tokio runtime (a Rust extension's `block_on`),
/// close another loop, or fork, exactly as on the stock loop.
pub(super) fn drive(slf: &Bound<'_, LoopCore>, driver: &Driver) -> PyResult<()> {
    let shared = &*slf.get().shared;
    let mut batch = VecDeque::new();
    let mut fd_events = Vec::new();
    let mut raw = loop_poll::raw_events();
    // The first iteration of every run polls, as the stock loop would.
    let mut last_poll = f64::NEG_INFINITY;
    let mut skipped = 0;
    // The last poll filled its batch: the next iteration polls too.
    let mut more = false;
    // Retries noted by an iteration that an exception ended.
    slf.get().queue_sock_retries(slf.py());
    loop {
        shared.drop_cancelled_timers(slf.py());
        let stopping = shared.stopping.load(Ordering::Relaxed);
        if shared.has_ready_hint(slf.py()) || stopping {
            let now = clock::monotonic();
            let (every, interval) = if slf.get().has_io_sources() {
                (BUSY_POLL_EVERY, BUSY_POLL_INTERVAL)
            } else {
                (BUSY_POLL_EVERY_NO_IO, BUSY_POLL_INTERVAL_NO_IO)
            };
            // (The notes are taken first: taking clears them.)
            let noted =
                take_poll_notes(shared) | std::mem::take(&mut more) | slf.get().take_rechecks();
            if !stopping && !noted && skipped + 1 < every && now - last_poll < interval {
                skipped += 1;
            } else {
                // The run's first poll queues its transports' I/O after
                // the callbacks queued before the run (uvloop runs those
                // before its first poll, and asyncio queues I/O last);
                // later polls put it first (see `queue_polled`).
                let transports_first = last_poll != f64::NEG_INFINITY;
                last_poll = now;
                skipped = 0;
                more = poll_io(slf, driver, &mut raw, 0, transports_first)?;
            }
        } else {
            shared.wakeup.about_to_park();
            // Re-check after publishing `parked`: a thread that queued a
            // callback before seeing the flag did not wake us.
            let parked = if shared.has_ready(slf.py()) {
                Ok(false)
            } else {
                park(slf, driver, &mut raw)
            };
            shared.wakeup.unparked();
            more = parked?;
            take_poll_notes(shared);
            last_poll = clock::monotonic();
            skipped = 0;
        }
        // Due timers are found by the clock below; this only re-arms it.
        driver.timer.take_expired();
        if driver.signal_flag.take() {
            LoopCore::handle_signals(slf, driver)?;
        }
        slf.get().dispatch_fd_events(slf.py(), &mut fd_events);
        if shared.may_have_timers() {
            shared.move_due_timers(slf.py(), LoopCore::now(slf)?);
        }
        LoopCore::run_ready(slf, &mut batch)?;
        slf.get().queue_sock_retries(slf.py());
        if shared.stopping.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}
