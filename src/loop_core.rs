//! `LoopCore`: the native engine under `tokioloop.Loop`.
//!
//! It owns the ready queue, the timer heap and the tokio runtime, and runs
//! the loop iteration itself (`_run`). The Python class `tokioloop.Loop`
//! derives from it and from `asyncio.BaseEventLoop`, so the policy parts
//! asyncio writes in Python (exception handler, executors, asyncgen hooks,
//! `run_until_complete`, the high-level network helpers) are asyncio's own
//! code, while everything on the per-callback path is here. The private
//! attributes `BaseEventLoop` reads and writes (`_closed`, `_stopping`,
//! `_debug`, `_task_factory`) are native properties, so both halves share
//! one state.
//!
//! One iteration mirrors `BaseEventLoop._run_once`: drop cancelled timers;
//! poll for I/O (without blocking if callbacks are ready or the loop is
//! stopping, otherwise parked until the next timer, a thread-safe wake-up or
//! a signal); move due timers to the ready queue; run the callbacks that
//! were ready at that point, and no others.
//!
//! Split by concern: this file has the state, scheduling (`call_soon`,
//! `call_at`, handles and their spare pool) and the Python-facing methods;
//! `iteration` has the loop turn itself (`drive`, `run_ready`) and the
//! runtime it parks on; `fd_io` has everything about fds (reader/writer
//! callbacks, native transports' registrations, `sock_*` waits).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyDict, PyTuple};
use pyo3::IntoPyObjectExt;
use rustc_hash::FxHashMap as HashMap;

use crate::accept;
use crate::context_pool::{self, ContextPool};
use crate::counted_mutex::CountedMutex;
use crate::fastcall::CallArgs;
use crate::fd_watch::{Direction, EventSink, FdEvent, FdWatchers};
use crate::gil_cell::GilCell;
use crate::gil_park::ParkScope;
use crate::handles::{self, source_traceback, Args, Callback, Deadline, Handle, TimerHandle};
use crate::heap_tuning;
use crate::inet_address;
use crate::loop_poll::LoopPoller;
use crate::native_io::{NativeEntry, NativeIo};
use crate::park::Wakeup;
use crate::pyrefs::{refs, vectorcall};
use crate::runtime;
use crate::sock_ops::{self, Request, SockWait, SockWaits};
use crate::sock_watch::SockWatch;
use crate::spare_bytes::SpareBytes;
use crate::timers::{TimerHeap, TimerPayload};

mod fd_io;
mod iteration;
mod time_source;

use fd_io::fileobj_to_fd;
use iteration::{drive, Driver};
use time_source::TimeSource;

/// `time.get_clock_info('monotonic').resolution` on Linux: timers due
/// within it of now fire this iteration, as in asyncio.
const CLOCK_RESOLUTION: f64 = 1e-9;

/// A queued callback: ours, or an `asyncio.Handle` that asyncio's own code
/// handed to `_add_callback` (signal handlers are scheduled that way).
pub enum Ready {
    Native(Py<Handle>),
    Foreign(Py<PyAny>),
    /// A native transport whose fd the reactor reported ready.
    Io(NativeIo, Direction),
}

impl TimerPayload for Py<Handle> {
    fn is_cancelled(&self) -> bool {
        self.get().is_cancelled()
    }
    fn unscheduled(&self) {
        self.get().set_scheduled(false);
    }
}

/// State shared with handles and with other threads
/// (`call_soon_threadsafe`).
pub struct Shared {
    /// Touched only with the GIL held: by the loop thread, and by other
    /// threads only inside Python calls (`call_soon_threadsafe`), which
    /// hold it too (see `gil_cell`). Reactor wakers, which run without the
    /// GIL, push to `fd_events` instead.
    ready: GilCell<VecDeque<Ready>>,
    timers: CountedMutex<TimerHeap<Py<Handle>>>,
    stopping: AtomicBool,
    closed: AtomicBool,
    debug: AtomicBool,
    wakeup: Arc<Wakeup>,
    /// Readiness edges reported by the reactor, not yet dispatched.
    fd_events: CountedMutex<Vec<FdEvent>>,
    /// An fd was put on the reactor since the last I/O poll: the next
    /// iteration polls even while callbacks are queued (see `drive`).
    registered: AtomicBool,
}

impl EventSink for Shared {
    fn push_fd_event(&self, event: FdEvent) {
        self.fd_events.lock().push(event);
        self.wake();
    }
}

impl Shared {
    fn new(wakeup: Arc<Wakeup>) -> Self {
        Shared {
            ready: GilCell::new(VecDeque::new()),
            timers: CountedMutex::new(TimerHeap::new()),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            wakeup,
            fd_events: CountedMutex::new(Vec::new()),
            registered: AtomicBool::new(false),
        }
    }

    pub fn debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    pub fn timer_cancelled(&self) {
        self.timers.lock().note_cancelled();
    }

    fn push_ready(&self, py: Python<'_>, item: Ready) {
        self.ready.borrow_mut(py).push_back(item);
    }

    fn ready_len(&self, py: Python<'_>) -> usize {
        self.ready.borrow_mut(py).len()
    }

    /// Exact, under the lock: for the decision to park. (The ready queue is
    /// exact anyway: every push holds the GIL, as we do.)
    fn has_ready(&self, py: Python<'_>) -> bool {
        self.ready_len(py) > 0 || !self.fd_events.lock().is_empty()
    }

    /// Without locking; may miss an fd event the reactor has just pushed
    /// (see `counted_mutex`), which the exact check before parking catches.
    fn has_ready_hint(&self, py: Python<'_>) -> bool {
        self.ready_len(py) > 0 || self.fd_events.len_hint() > 0
    }

    /// An fd has just been put on the reactor. On the stock loop, a reader
    /// added for an fd that is already readable runs in the very next
    /// iteration, ahead of callbacks scheduled after that iteration's
    /// select; so the next iteration polls, whatever the busy-poll pacing.
    fn note_registration(&self) {
        self.registered.store(true, Ordering::Relaxed);
    }

    /// Whether an fd was registered since the last poll; clears the note.
    fn take_registration(&self) -> bool {
        // A plain load first: most iterations have nothing to take, and a
        // swap is a locked instruction.
        self.registered.load(Ordering::Relaxed) && self.registered.swap(false, Ordering::Relaxed)
    }

    /// Wake the loop thread if it is parked (or about to park).
    fn wake(&self) {
        self.wakeup.wake();
    }

    fn drop_cancelled_timers(&self, py: Python<'_>) {
        if self.timers.len_hint() == 0 {
            return;
        }
        let mut graveyard = Vec::new();
        self.timers.lock().drop_cancelled(&mut graveyard);
        // After unlocking: dropping may run Python code.
        for handle in graveyard {
            handles::release(py, handle);
        }
    }

    /// A handle is about to run: if it is a timer `pop_due` moved here, it
    /// leaves the heap's books now (the heap does not touch the handles it
    /// pops, see `TimerHeap::pop_due`), as asyncio's `_run_once` does when
    /// it pops one.
    fn take_up(&self, handle: &Handle) {
        if handle.is_scheduled() {
            handle.set_scheduled(false);
            if handle.is_cancelled() {
                self.timers.lock().cancelled_left_heap();
            }
        }
    }

    /// Whether the timer heap may have timers (a hint: without the lock).
    fn may_have_timers(&self) -> bool {
        self.timers.len_hint() != 0
    }

    /// Queue the timers due at `now` (by the loop's clock).
    fn move_due_timers(&self, py: Python<'_>, now: f64) {
        let mut timers = self.timers.lock();
        if timers.is_empty() {
            return;
        }
        let end_time = now + CLOCK_RESOLUTION;
        let mut ready = self.ready.borrow_mut(py);
        timers.pop_due(end_time, |h| ready.push_back(Ready::Native(h)));
    }
}

#[pyclass(frozen, subclass, module = "tokioloop._tokioloop")]
pub struct LoopCore {
    shared: Arc<Shared>,
    /// The epoll instance the loop parks on, holding the native I/O
    /// objects' fds (see `loop_poll`).
    poller: Arc<LoopPoller>,
    driver: Mutex<Option<Driver>>,
    watchers: Mutex<FdWatchers>,
    /// Native I/O objects and their readiness state by registration token
    /// (see `native_io`); the loop's epoll events are keyed by the tokens.
    natives: Mutex<HashMap<u64, NativeEntry>>,
    next_native: AtomicU64,
    /// How many fds `watchers` and `natives` hold, each stored while its
    /// lock is held: both zero means no I/O to poll for but the signal
    /// socket (see `BUSY_POLL_EVERY_NO_IO`).
    watched_fds: AtomicUsize,
    native_ios: AtomicUsize,
    /// Watched fds whose callbacks the last poll queued and that no
    /// callback has reported drained since: while any, the next iteration
    /// polls whatever the busy-poll pacing, for asyncio's level-triggered
    /// re-run of a callback whose fd stays ready. The native accept loop
    /// reports its listener drained (it accepted until EAGAIN), which
    /// spares a server that poll per accepted connection.
    rechecks: AtomicU32,
    /// Waiting `sock_*` calls by future (see `sock_ops`).
    sock_waits: Mutex<SockWaits>,
    /// Sockets' registrations kept across `sock_*` waits, by fd (see
    /// `sock_watch`); each is in `natives` too, under its token, and its
    /// socket in the loop's epoll instance (`LoopPoller::add_sock`).
    sock_watches: Mutex<HashMap<i32, Py<SockWatch>>>,
    /// `sock_*` calls to retry as if their fd had reported ready, queued
    /// once the running iteration's callbacks are done (see
    /// `retry_sock_watch`).
    sock_retries: GilCell<Vec<(i32, Direction)>>,
    /// What a poll queues behind the callbacks already ready (see
    /// `queue_polled`), gathered here first. Empty between polls; kept so
    /// that a poll that fires a watch does not allocate a list each time.
    poll_tail: GilCell<Vec<Ready>>,
    /// `loop._transports` (asyncio's fd -> transport map, a `TransportMap`
    /// unless replaced), held here so that a connection's insert, check
    /// and removal read it without an attribute lookup each.
    transports: GilCell<Option<Py<PyAny>>>,
    signal_fd: i32,
    task_factory: Mutex<Option<Py<PyAny>>>,
    /// `pthread_self()` of the thread inside `_run`, 0 when not running.
    running_on: AtomicUsize,
    /// `{"loop": self}`, made once: `Future(loop=self)` through a vectorcall
    /// would build this dict for every future (the C type has no vectorcall).
    loop_kwargs: std::sync::OnceLock<Py<PyDict>>,
    /// Handles the loop has run that nothing else referred to, reset and
    /// kept for `call_soon` to reuse (see `handles::recycle`).
    spare: GilCell<SpareHandles>,
    /// The `bytes` small stream reads are copied into when no one kept it.
    pub(crate) spare_bytes: SpareBytes,
    /// A timer was hidden from the cyclic GC since the heap was last
    /// exposed (see `_expose_hidden_timers`).
    timers_hidden: AtomicBool,
    /// Whether the scheduler reads an overridden `time()` (see
    /// `time_source`).
    time_source: TimeSource,
}

/// The pool of reusable handles and its current size limit.
struct SpareHandles {
    handles: Vec<Py<Handle>>,
    /// The contexts of recycled handles, for `context=None` copies.
    contexts: ContextPool,
    /// The last iteration's callback count, within
    /// `SPARE_MIN..=SPARE_MAX`: about what the next one will make.
    cap: usize,
    /// The context private callbacks run in (see `batch_context`), kept
    /// empty between iterations.
    batch_context: Option<Py<PyAny>>,
}

const SPARE_MIN: usize = 256;
/// A thread calling `call_soon_threadsafe` in a loop queues ~30-50k
/// handles per 5 ms GIL slice; with 16384 spares two thirds of them were
/// freed and allocated again (~40 ns a call). The pool never holds more
/// than the last batch had alive at once (at most ~7 MiB of 112-byte
/// handles), and the next, smaller batch trims it.
const SPARE_MAX: usize = 65536;

type OwnedHandle = Option<Py<Handle>>;

/// Everything a loop holds on to, taken out at close or GC clear.
type Queued = (
    VecDeque<Ready>,
    (Vec<Py<Handle>>, Vec<Py<PyAny>>),
    Vec<Py<Handle>>,
    (Vec<Py<Handle>>, Vec<Py<PyAny>>),
    HashMap<u64, NativeEntry>,
    Vec<SockWait>,
    Vec<Py<SockWatch>>,
);

/// Ready-queue length from which new handles are hidden from the cyclic GC
/// while queued (timers always are: they wait).
const UNTRACK_BACKLOG: usize = 512;

/// Drop what `take_queued` took out, handing queued handles back to the
/// cyclic GC if they live on elsewhere (see `handles::untrack_owned`).
fn release_queued(py: Python<'_>, queued: Queued) {
    let (ready, spare, timers, watchers, natives, sock_waits, sock_watches) = queued;
    // Spare handles hold no callback, spare contexts no variables, and
    // nothing else refers to them.
    drop(spare);
    for item in ready {
        match item {
            Ready::Native(h) => {
                // A due timer popped but not run: no longer in any heap.
                h.get().set_scheduled(false);
                handles::release(py, h)
            }
            other => drop(other),
        }
    }
    for handle in timers {
        handles::release(py, handle);
    }
    drop((watchers, natives, sock_waits, sock_watches));
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// An id of the calling thread that is cheap to read (no allocation).
fn current_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

impl LoopCore {
    // The scheduling methods; their Python entry points are in `fastcall`.

    /// Python entry point in `fastcall` (asyncio's C `Future` calls
    /// `get_debug` per future; this is per operation too).
    pub(crate) fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let r = refs(py);
        if r.running_loop_lookup_is_free && slf.get().runs_here() {
            // `Future()` finds this loop as the running one: no kwargs at all.
            return vectorcall(py, r.future_type.bind(py), &[], &[], None);
        }
        r.future_type
            .bind(py)
            .call((), Some(Self::loop_kwargs(slf)?.bind(py)))
    }

    pub(crate) fn call_soon_impl(slf: &Bound<'_, Self>, call: CallArgs<'_>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        this.check_open()?;
        if this.shared.debug() {
            Self::debug_checks(slf, &call.callback, "call_soon", true)?;
        }
        Ok(Self::schedule_soon(slf, call.callback, call.args, call.context, false)?.into_any())
    }

    pub(crate) fn call_soon_threadsafe_impl(
        slf: &Bound<'_, Self>,
        call: CallArgs<'_>,
    ) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        this.check_open()?;
        if this.shared.debug() {
            Self::debug_checks(slf, &call.callback, "call_soon_threadsafe", false)?;
        }
        // From another thread, the handle waits for the loop thread to take
        // the GIL: treat it as a backlog.
        let waits = !this.runs_here();
        let handle = Self::schedule_soon(slf, call.callback, call.args, call.context, waits)?;
        this.shared.wake();
        Ok(handle.into_any())
    }

    pub(crate) fn call_later_impl(
        slf: &Bound<'_, Self>,
        call: CallArgs<'_>,
    ) -> PyResult<Py<PyAny>> {
        let delay = call
            .lead
            .filter(|d| !d.is_none())
            .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("delay must not be None"))?;
        let when = Deadline {
            at: Self::now(slf)? + seconds(&delay)?,
            is_int: false,
            given: None,
        };
        let timer = Self::schedule_at(slf, when, call.callback, call.args, call.context)?;
        Ok(timer.into_any().unbind())
    }

    pub(crate) fn call_at_impl(slf: &Bound<'_, Self>, call: CallArgs<'_>) -> PyResult<Py<PyAny>> {
        let when = call
            .lead
            .filter(|w| !w.is_none())
            .ok_or_else(|| pyo3::exceptions::PyTypeError::new_err("when cannot be None"))?;
        let when = deadline(&when)?;
        let timer = Self::schedule_at(slf, when, call.callback, call.args, call.context)?;
        Ok(timer.into_any().unbind())
    }

    /// True while `_run` drives this loop, on whatever thread.
    fn is_running(&self) -> bool {
        self.running_on.load(Ordering::Relaxed) != 0
    }

    /// True when this loop is the one running on the calling thread (it is
    /// inside `_run` here, so asyncio's running loop is this loop).
    fn runs_here(&self) -> bool {
        self.running_on.load(Ordering::Relaxed) == current_thread()
    }

    /// The shared `{"loop": self}` kwargs dict (see the field).
    /// (A cycle loop -> dict -> loop: the loop's traversal visits the dict,
    /// and the dict's own clear breaks the cycle. `close()` empties it, so
    /// that a closed loop is freed when its last reference goes, as
    /// asyncio's is; a closed loop that still makes futures fills it again.)
    fn loop_kwargs<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a Py<PyDict>> {
        let cell = &slf.get().loop_kwargs;
        if let Some(kwargs) = cell.get() {
            if kwargs.bind(slf.py()).is_empty() {
                kwargs.bind(slf.py()).set_item("loop", slf)?;
            }
            return Ok(kwargs);
        }
        let kwargs = PyDict::new(slf.py());
        kwargs.set_item("loop", slf)?;
        // The GIL is held, so no other thread can have set it meanwhile.
        Ok(cell.get_or_init(|| kwargs.unbind()))
    }

    fn check_open(&self) -> PyResult<()> {
        if self.shared.closed.load(Ordering::Relaxed) {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    /// The debug-mode argument checks asyncio makes before scheduling.
    fn debug_checks(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        if check_thread {
            slf.call_method0("_check_thread")?;
        }
        slf.call_method1("_check_callback", (callback, method))?;
        Ok(())
    }

    fn make_callback(
        &self,
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        args: Args,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Callback> {
        let context = match context {
            Some(c) if !c.is_none() => c.unbind(),
            _ => {
                let copied = self.spare.borrow_mut(py).contexts.copy(py);
                match copied {
                    Some(context) => context,
                    None => context_pool::copy_current(py)?,
                }
            }
        };
        Ok(Callback {
            func: callback.unbind(),
            args,
            context,
        })
    }

    /// A new handle (made by `make`: `Handle::new` or `Handle::new_timer`)
    /// for `callback(*args)` in `context`, with its traceback in debug mode.
    fn new_handle<T>(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Args,
        context: Option<Bound<'_, PyAny>>,
        make: impl FnOnce(Py<PyAny>, Callback, Option<Py<PyAny>>) -> T,
    ) -> PyResult<T> {
        let py = slf.py();
        let this = slf.get();
        let tb = if this.shared.debug() {
            Some(source_traceback(py)?)
        } else {
            None
        };
        let call = this.make_callback(py, callback, args, context)?;
        Ok(make(slf.clone().into_any().unbind(), call, tb))
    }

    fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Args,
        context: Option<Bound<'_, PyAny>>,
        waits: bool,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        // A spare handle (see `handles::recycle`) unless in debug mode,
        // where each handle records its own traceback.
        let spare = if this.shared.debug() {
            None
        } else {
            this.spare.borrow_mut(py).handles.pop()
        };
        // Handles the loop owns are hidden from the GC only while it runs
        // (see `handles::expose_if_shared`).
        let running = this.is_running();
        let handle = match spare {
            Some(handle) => match this.make_callback(py, callback, args, context) {
                Ok(call) => {
                    handles::reuse(py, &handle, call);
                    if !running {
                        handles::track(py, &handle);
                    }
                    handle
                }
                Err(err) => {
                    this.spare.borrow_mut(py).handles.push(handle);
                    return Err(err);
                }
            },
            None => Py::new(
                py,
                Self::new_handle(slf, callback, args, context, Handle::new)?,
            )?,
        };
        // Only a backlog is worth hiding from the GC (see `untrack_owned`):
        // a handle that runs in the next iteration dies young anyway, and
        // untracking and re-tracking it costs about 100 instructions.
        if running && (waits || this.shared.ready_len(py) >= UNTRACK_BACKLOG) {
            handles::untrack_owned(handle.bind(slf.py()));
        }
        slf.get()
            .shared
            .push_ready(py, Ready::Native(handle.clone_ref(py)));
        Ok(handle)
    }

    fn schedule_at<'py>(
        slf: &Bound<'py, Self>,
        when: Deadline,
        callback: Bound<'py, PyAny>,
        args: Args,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, TimerHandle>> {
        let this = slf.get();
        this.check_open()?;
        if this.shared.debug() {
            // asyncio's call_later goes through call_at and names it.
            Self::debug_checks(slf, &callback, "call_at", true)?;
        }
        let at = when.at;
        let timer = Self::new_handle(slf, callback, args, context, |loop_, call, tb| {
            Handle::new_timer(loop_, call, tb, when)
        })?;
        let timer = Bound::new(slf.py(), timer)?;
        if this.is_running() {
            handles::untrack_owned(timer.as_super());
            this.timers_hidden.store(true, Ordering::Relaxed);
        }
        let base: Py<Handle> = timer.as_super().clone().unbind();
        base.get().set_scheduled(true);
        slf.get().shared.timers.lock().push(at, base);
        Ok(timer)
    }

    /// `loop._transports`; AttributeError before it is set, as for a
    /// missing attribute.
    pub(crate) fn transports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.transports.borrow_mut(py).as_ref() {
            Some(t) => Ok(t.bind(py).clone()),
            None => Err(pyo3::exceptions::PyAttributeError::new_err(
                "'Loop' object has no attribute '_transports'",
            )),
        }
    }

    /// Everything queued or registered, taken out so the caller drops it
    /// after the locks are released (dropping may run Python code).
    fn take_queued(&self) -> Queued {
        // SAFETY: `take_queued` runs from `_close_native` and the GC's
        // `__clear__`, both with the GIL held.
        let py = unsafe { Python::assume_attached() };
        let ready = std::mem::take(&mut *self.shared.ready.borrow_mut(py));
        let spare = {
            let mut spare = self.spare.borrow_mut(py);
            (std::mem::take(&mut spare.handles), spare.contexts.trim(0))
        };
        let timers = self.shared.timers.lock().clear();
        let watchers = self.watchers.lock().take_all(&self.poller);
        self.watched_fds.store(0, Ordering::Relaxed);
        let natives = std::mem::take(&mut *self.natives.lock());
        self.native_ios.store(0, Ordering::Relaxed);
        let sock_waits = self.sock_waits.lock().take_all();
        self.sock_retries.borrow_mut(py).clear();
        let sock_watches: Vec<_> = self
            .sock_watches
            .lock()
            .drain()
            .map(|(fd, watch)| {
                self.poller.remove(fd);
                watch
            })
            .collect();
        for watch in &sock_watches {
            drop(watch.get().release());
        }
        (
            ready,
            spare,
            timers,
            watchers,
            natives,
            sock_waits,
            sock_watches,
        )
    }

    pub(crate) fn sock_waits(&self) -> &Mutex<SockWaits> {
        &self.sock_waits
    }

    pub(crate) fn debug_flag(&self) -> bool {
        self.shared.debug()
    }

    /// A scheduled timer was cancelled (counts towards heap compaction).
    pub(crate) fn note_timer_cancelled(&self) {
        self.shared.timer_cancelled();
    }

    /// `call_soon(callback, *args)` for native code, in a copy of the
    /// current context.
    pub(crate) fn call_soon_internal(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<()> {
        slf.get().check_open()?;
        Self::schedule_soon(slf, callback, Args::tuple(args.unbind()), None, false).map(drop)
    }

    /// `create_task(coro, name=, context=)`: the Task made directly where
    /// asyncio's method would only make it.
    pub(crate) fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        name: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        let r = refs(py);
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        let slow = this.task_factory.lock().is_some()
            || this.shared.debug()
            || (context.is_some() && !r.task_takes_context);
        if slow {
            // asyncio's own create_task: task factories, debug tracebacks,
            // and the exact TypeError for context= on 3.10.
            let kwargs = PyDict::new(py);
            if let Some(n) = &name {
                kwargs.set_item("name", n)?;
            }
            if let Some(c) = &context {
                kwargs.set_item("context", c)?;
            }
            return r.base_create_task.bind(py).call((slf, coro), Some(&kwargs));
        }
        let task_type = r.task_type.bind(py);
        let lp = slf.as_any();
        match (&name, &context) {
            // As in create_future: no kwargs dict when this loop is running.
            (None, None) if r.running_loop_lookup_is_free && this.runs_here() => {
                vectorcall(py, task_type, &[&coro], &[], None)
            }
            (None, None) => task_type.call((&coro,), Some(Self::loop_kwargs(slf)?.bind(py))),
            (Some(n), None) => vectorcall(
                py,
                task_type,
                &[&coro],
                &[lp, n],
                Some(r.kw_loop_name.bind(py)),
            ),
            (None, Some(c)) => vectorcall(
                py,
                task_type,
                &[&coro],
                &[lp, c],
                Some(r.kw_loop_context.bind(py)),
            ),
            (Some(n), Some(c)) => vectorcall(
                py,
                task_type,
                &[&coro],
                &[lp, n, c],
                Some(r.kw_loop_name_context.bind(py)),
            ),
        }
    }
}

/// `call_at`'s deadline: as a float, and as given where that differs
/// (`when()` answers what `call_at` was given, as asyncio's does).
fn deadline(value: &Bound<'_, PyAny>) -> PyResult<Deadline> {
    let at = seconds(value)?;
    let ptr = value.as_ptr();
    // SAFETY: `value` is a live object and the GIL is held (`Bound`); the
    // checks only read its type.
    let (float, int) = unsafe {
        (
            ffi::PyFloat_CheckExact(ptr) != 0,
            ffi::PyLong_CheckExact(ptr) != 0,
        )
    };
    // Below 2**53 every int is a float exactly, and comes back the same.
    let is_int = int && at.abs() < 9007199254740992.0;
    let given = (!float && !is_int).then(|| value.clone().unbind());
    Ok(Deadline { at, is_int, given })
}

/// A delay or deadline as a float. An exact `int` (uvicorn's keep-alive
/// `call_later(5, ...)` on every response) is converted directly, as
/// `float(n)` would (same rounding, same `OverflowError`), instead of
/// through `PyFloat_AsDouble`, which makes and frees a `float` object on
/// the way; everything else takes `PyFloat_AsDouble` as before.
fn seconds(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    // SAFETY: `value` is a live object (borrowed for the call) and the GIL
    // is held (`Bound`); `PyLong_CheckExact` only reads its type.
    if unsafe { ffi::PyLong_CheckExact(value.as_ptr()) } != 0 {
        // SAFETY: as above, and `value` is an exact `int`.
        let x = unsafe { ffi::PyLong_AsDouble(value.as_ptr()) };
        if x == -1.0 {
            if let Some(err) = PyErr::take(value.py()) {
                return Err(err);
            }
        }
        return Ok(x);
    }
    value.extract::<f64>()
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let py = _args.py();
        heap_tuning::tune_once();
        let wakeup = Arc::new(Wakeup::new()?);
        let (runtime, reactor_fd) = runtime::build()?;
        let poller = {
            let _context = runtime.enter();
            Arc::new(LoopPoller::new(reactor_fd, &wakeup)?)
        };
        let shared = Arc::new(Shared::new(wakeup));
        let driver = Driver::new(runtime, &shared.wakeup, &poller)?;
        Ok(LoopCore {
            shared,
            poller,
            watchers: Mutex::new(FdWatchers::default()),
            natives: Mutex::new(HashMap::default()),
            next_native: AtomicU64::new(0),
            watched_fds: AtomicUsize::new(0),
            rechecks: AtomicU32::new(0),
            native_ios: AtomicUsize::new(0),
            sock_waits: Mutex::new(SockWaits::default()),
            sock_watches: Mutex::new(HashMap::default()),
            sock_retries: GilCell::new(Vec::new()),
            poll_tail: GilCell::new(Vec::new()),
            transports: GilCell::new(None),
            signal_fd: driver.signal_write_fd(),
            driver: Mutex::new(Some(driver)),
            task_factory: Mutex::new(None),
            running_on: AtomicUsize::new(0),
            loop_kwargs: std::sync::OnceLock::new(),
            spare: GilCell::new(SpareHandles {
                handles: Vec::new(),
                contexts: ContextPool::new(py),
                cap: SPARE_MIN,
                batch_context: None,
            }),
            spare_bytes: SpareBytes::default(),
            timers_hidden: AtomicBool::new(false),
            time_source: TimeSource::default(),
        })
    }

    fn __setattr__(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        // SAFETY: the GIL is held and all three objects are live.
        let rc =
            unsafe { ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), value.as_ptr()) };
        if rc < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        slf.get().note_attribute_set(name);
        Ok(())
    }

    fn __delattr__(slf: &Bound<'_, Self>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: as above; a NULL value deletes the attribute.
        let rc = unsafe {
            ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        slf.get().note_attribute_set(name);
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    // `time()` is a `METH_NOARGS` C method (`fastcall::install`).

    fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.wake();
    }

    /// Also reached from `fastcall`'s entry point, which replaces this
    /// method on the type and falls back to it for unusual calls.
    ///
    /// Other keywords (`eager_start=`, or anything for a task factory) go
    /// to asyncio's own `create_task`, which takes them from 3.13.3 on
    /// (how it passes them on changed between 3.13 patch releases) and
    /// raises its TypeError before.
    #[pyo3(name = "create_task", signature = (coro, *, name=None, context=None, **kwargs))]
    fn create_task_py<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        name: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(kwargs) = kwargs.filter(|k| !k.is_empty()) else {
            return Self::create_task(slf, coro, name, context);
        };
        let py = slf.py();
        slf.get().check_open()?;
        // PyO3 made this dict for the call: ours to add to.
        if let Some(n) = name {
            kwargs.set_item("name", n)?;
        }
        if let Some(c) = context {
            kwargs.set_item("context", c)?;
        }
        refs(py)
            .base_create_task
            .bind(py)
            .call((slf, coro), Some(kwargs))
    }

    /// Wake the loop from another thread or a signal handler
    /// (asyncio's self-pipe write).
    fn _write_to_self(&self) {
        self.shared.wake();
    }

    /// Queue a handle made elsewhere (asyncio's `_add_callback`).
    fn _add_callback(&self, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(native) = handle.cast::<Handle>() {
            if !native.get().is_cancelled() {
                self.shared
                    .push_ready(handle.py(), Ready::Native(native.clone().unbind()));
            }
        } else if !handle
            .getattr(intern!(handle.py(), "_cancelled"))?
            .is_truthy()?
        {
            self.shared
                .push_ready(handle.py(), Ready::Foreign(handle.clone().unbind()));
        }
        Ok(())
    }

    /// Drive the loop until `stop()`; `run_forever` wraps this with
    /// asyncio's set-up and clean-up.
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let driver = this.driver.lock().take().ok_or_else(closed_error)?;
        // A class's `time` may have been replaced since the last run.
        this.time_source.forget();
        this.running_on.store(current_thread(), Ordering::Relaxed);
        let result = {
            let _scope = ParkScope::enter();
            drive(slf, &driver)
        };
        this.running_on.store(0, Ordering::Relaxed);
        *this.driver.lock() = Some(driver);
        this.expose_shared_handles(slf.py());
        result
    }

    /// Whether a timer scheduled while the loop ran is still hidden from the
    /// cyclic GC (see `_expose_hidden_timers`).
    fn _timers_hidden(&self) -> bool {
        self.timers_hidden.load(Ordering::Relaxed)
    }

    /// Make the pending timers that user code also holds visible to the
    /// cyclic GC again, as `expose_shared_handles` does for the ready queue.
    ///
    /// Timers scheduled while the loop runs are hidden while they wait (see
    /// `handles::untrack_owned`). Walking the heap whenever `run_forever`
    /// returned made every `run_until_complete` linear in the pending
    /// timers, so the Python layer calls this from a `gc.callbacks` hook
    /// instead, at the start of a full collection, for a stopped loop that
    /// hid some: a dropped, unclosed loop with a timer kept by an object in
    /// a cycle through it is then collected. The walk is linear in the
    /// heap, once per full collection at most, which itself visits every
    /// object.
    fn _expose_hidden_timers(&self, py: Python<'_>) {
        if self.is_running() || !self.timers_hidden.swap(false, Ordering::Relaxed) {
            return;
        }
        // A pending timer holds a callback, and tracking runs no Python
        // code, so the heap cannot change under the walk.
        for h in self.shared.timers.lock().payloads() {
            handles::expose_if_shared(py, h);
        }
    }

    /// One non-blocking accept on the TCP listener `fd` (see `accept`):
    /// `(conn_fd, peer_address, local_address)`, or None when no connection
    /// is waiting.
    /// An empty queue also reports the listener drained, which spares the
    /// level-triggered re-check poll after the accept loop (`rechecks`).
    fn _accept_inet<'py>(
        &self,
        py: Python<'py>,
        fd: std::os::fd::RawFd,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        Ok(match accept::accept_inet(fd)? {
            accept::Accepted::Conn(conn) => Some(PyTuple::new(
                py,
                [
                    conn.fd.into_bound_py_any(py)?,
                    conn.names.peer(py)?,
                    conn.names.local(py)?,
                ],
            )?),
            accept::Accepted::Empty => {
                self.report_drained();
                None
            }
            accept::Accepted::Interrupted => None,
        })
    }

    /// Up to `backlog` accepts on the TCP listener `fd`, each connection
    /// queued as `on_accept(protocol_factory, conn, names, server)` (see
    /// `accept::accept_all`). None when the round is over; `(attempts,
    /// error)` when an accept failed, for `Loop._accept_connection` to
    /// report as asyncio does.
    #[allow(clippy::too_many_arguments)]
    fn _accept_inet_all<'py>(
        slf: &Bound<'py, Self>,
        fd: std::os::fd::RawFd,
        family: i32,
        kind: i32,
        proto: i32,
        backlog: usize,
        on_accept: Bound<'py, PyAny>,
        protocol_factory: Bound<'py, PyAny>,
        server: Bound<'py, PyAny>,
    ) -> PyResult<Option<(usize, Py<PyAny>)>> {
        let py = slf.py();
        let listener = accept::Listener {
            fd,
            family,
            kind,
            proto,
            on_accept: &on_accept,
            protocol_factory: &protocol_factory,
            server: &server,
        };
        let end = accept::accept_all(py, &listener, backlog, |callback, args| {
            Self::schedule_soon(slf, callback, Args::tuple(args.unbind()), None, false).map(drop)
        })?;
        Ok(match end {
            accept::BatchEnd::Drained => {
                slf.get().report_drained();
                None
            }
            accept::BatchEnd::Done => None,
            accept::BatchEnd::Failed { attempts, error } => {
                Some((attempts, error.into_value(py).into_any()))
            }
        })
    }

    /// The reader callback of a plain TCP listener (`Loop._start_serving`):
    /// `Loop._accept_connection`'s round without its frame. Outside debug
    /// mode, `_accept_inet_all` until the queue is empty or `backlog`
    /// connections were taken, each accept error handled by Python's
    /// `_accept_failed` as asyncio does; in debug mode (which logs each
    /// connection), `_accept_connection` itself.
    fn _accept_inet_round<'py>(
        slf: &Bound<'py, Self>,
        protocol_factory: Bound<'py, PyAny>,
        sock: Bound<'py, PyAny>,
        server: Bound<'py, PyAny>,
        backlog: isize,
        on_accept: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let none = py.None().into_bound(py);
        if slf.get().shared.debug() {
            slf.call_method1(
                intern!(py, "_accept_connection"),
                (&protocol_factory, &sock, &none, &server, backlog),
            )?;
            return Ok(());
        }
        let kind = crate::socket_fields::kind_of(&sock)?;
        let fd = crate::socket_fields::of(&sock)?.fd;
        // asyncio's `for _ in range(backlog)`: none for a backlog below 1.
        let mut left = usize::try_from(backlog).unwrap_or(0);
        while left > 0 {
            let failed = Self::_accept_inet_all(
                slf,
                fd,
                kind.family,
                kind.sock_type | libc::SOCK_NONBLOCK,
                kind.proto,
                left,
                on_accept.clone(),
                protocol_factory.clone(),
                server.clone(),
            )?;
            let Some((attempts, exc)) = failed else {
                return Ok(());
            };
            left = left.saturating_sub(attempts);
            let ends = slf.call_method1(
                intern!(py, "_accept_failed"),
                (
                    exc,
                    &protocol_factory,
                    &sock,
                    &none,
                    &server,
                    backlog,
                    PyTuple::empty(py),
                ),
            )?;
            if ends.is_truthy()? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// `_accept_plain` for a connection `_accept_inet_all` took (see
    /// `stream_owner::accept_plain`).
    fn _accept_plain_native<'py>(
        slf: &Bound<'py, Self>,
        protocol_factory: &Bound<'py, PyAny>,
        conn: &Bound<'py, PyAny>,
        extra: &Bound<'py, PyAny>,
        server: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        crate::stream_owner::accept_plain(slf, protocol_factory, conn, extra, server)
    }

    /// `create_connection` to one resolved address, natively from the
    /// socket to the transport (see `connect_op`): the op whose `future`
    /// resolves to `(transport, protocol)`.
    fn _connect_start<'py>(
        slf: &Bound<'py, Self>,
        protocol_factory: &Bound<'py, PyAny>,
        family: i32,
        kind: i32,
        proto: i32,
        address: &Bound<'py, PyAny>,
        all_errors: bool,
    ) -> PyResult<Bound<'py, crate::connect_op::ConnectOp>> {
        crate::connect_op::start(
            slf,
            protocol_factory,
            (family, kind, proto),
            address,
            all_errors,
        )
    }

    /// `socket.socket(family, kind, proto)` without its `__init__` frame
    /// (`socket_object`), for `Loop._connect_numeric`.
    fn _new_socket<'py>(
        &self,
        py: Python<'py>,
        family: i32,
        kind: i32,
        proto: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::socket_object::new_socket(py, family, kind, proto, None)
    }

    /// A `SocketTransport` for `sock`, exactly a `socket.socket`, built
    /// natively (see `stream_owner::new_socket_transport`): what
    /// `_accept_plain` and `_connect_numeric` use in place of
    /// `_make_socket_transport` when no subclass overrides that.
    #[pyo3(signature = (sock, protocol, waiter, extra, server=None))]
    fn _new_socket_transport<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        waiter: &Bound<'py, PyAny>,
        extra: &Bound<'py, PyAny>,
        server: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let none = slf.py().None().into_bound(slf.py());
        let server = server.unwrap_or(&none);
        crate::stream_owner::new_socket_transport(slf, sock, protocol, waiter, extra, server, false)
    }

    /// The `SocketNames` of a connected AF_INET/AF_INET6 socket (each name
    /// None where the socket module's call would raise): what a new client
    /// transport records, formatted when first read.
    fn _socket_names(&self, fd: std::os::fd::RawFd) -> inet_address::SocketNames {
        inet_address::SocketNames::of(fd, None)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_reader(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_callback(slf, fd, Direction::Read, callback, args)
    }

    #[pyo3(signature = (fd, callback, *args))]
    fn _add_writer(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::add_fd_callback(slf, fd, Direction::Write, callback, args)
    }

    /// `sock_recv` up to its `await` (see `sock_ops::start`): the data,
    /// a future to await, or `NotImplemented` for asyncio's own method.
    fn _sock_recv_start<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        nbytes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        sock_ops::start(slf, sock, Request::Recv(nbytes))
    }

    fn _sock_recv_into_start<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        buffer: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        sock_ops::start(slf, sock, Request::RecvInto(buffer))
    }

    fn _sock_sendall_start<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        sock_ops::start(slf, sock, Request::SendAll(data))
    }

    /// `sock_connect` after `connect_ex` reported a connect in progress
    /// (see `sock_ops::connect_wait`).
    fn _sock_connect_wait<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, PyAny>,
        address: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        sock_ops::connect_wait(slf, sock, address)
    }

    /// The task awaiting a `sock_*` future was cancelled: stop watching the
    /// fd if this call's callback is still the one registered there.
    fn _sock_wait_cancelled(slf: &Bound<'_, Self>, future: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::cancel_sock_wait(slf, future)
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_fd_callback(slf, fd, Direction::Read)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_fd_callback(slf, fd, Direction::Write)
    }

    /// The fd `fileobj` names, as a selector looks it up: its number, or,
    /// once it has none (a socket closed while watched), the fd it was
    /// registered with; otherwise the `ValueError` of `fileno()`.
    fn _watched_fd(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<i32> {
        fileobj_to_fd(fileobj).or_else(|err| self.watchers.lock().fd_of(fileobj).ok_or(err))
    }

    /// `(events, reader, writer)` for a watched fd, or None: what a
    /// selector key holds (selectors.EVENT_READ = 1, EVENT_WRITE = 2).
    fn _fd_key(&self, py: Python<'_>, fd: i32) -> Option<(u8, OwnedHandle, OwnedHandle)> {
        let watchers = self.watchers.lock();
        let (reader, writer) = watchers.get(fd)?;
        let events = u8::from(reader.is_some()) | (u8::from(writer.is_some()) << 1);
        Some((
            events,
            reader.map(|h| h.clone_ref(py)),
            writer.map(|h| h.clone_ref(py)),
        ))
    }

    /// Drop queued callbacks, timers, fd watchers and the runtime (after
    /// `close()`).
    fn _close_native(&self, py: Python<'_>) {
        self.shared.closed.store(true, Ordering::Relaxed);
        if let Some(kwargs) = self.loop_kwargs.get() {
            kwargs.bind(py).clear();
        }
        let queued = self.take_queued();
        let driver = self.driver.lock().take();
        release_queued(py, queued);
        drop(driver);
    }

    /// The fd that `signal.set_wakeup_fd` should write to.
    fn _signal_wakeup_fd(&self) -> i32 {
        self.signal_fd
    }

    /// Whether the loop parks in its own epoll instance with tokio's nested
    /// (else in tokio; see `loop_poll`). For tests and debugging.
    fn _parks_in_own_epoll(&self) -> bool {
        self.poller.parks_here()
    }

    /// Whether `context=None` copies reuse the contexts of recycled handles
    /// (the running CPython's context layout checked out, see
    /// `context_pool`), and how many spare handles and contexts are kept.
    /// For tests and debugging.
    fn _spare_counts(&self, py: Python<'_>) -> (bool, usize, usize) {
        let spare = self.spare.borrow_mut(py);
        (
            spare.contexts.reuses(),
            spare.handles.len(),
            spare.contexts.len(),
        )
    }

    /// Whether `context=None` copies read the current context from the
    /// thread state (its offset checked out, see `thread_context`) rather
    /// than through a probe. For tests and debugging.
    fn _reads_thread_context(&self, py: Python<'_>) -> bool {
        self.spare.borrow_mut(py).contexts.context_slot().is_some()
    }

    /// Number of queued callbacks and timers (for tests and debugging).
    fn _native_counts(&self, py: Python<'_>) -> (usize, usize) {
        (self.shared.ready_len(py), self.shared.timers.lock().len())
    }

    /// What the I/O registries hold: fds watched by callbacks, native I/O
    /// objects (transports, sockets of `sock_*` calls), waiting `sock_*`
    /// calls and kept `sock_*` registrations. For the tests that check
    /// nothing is left behind: all zero once everything is closed, but for
    /// the registrations of closed `sock_*` sockets, which stay until their
    /// fd number is used again (see `sock_watch`).
    fn _io_counts(&self) -> (usize, usize, usize, usize) {
        (
            self.watched_fds.load(Ordering::Relaxed),
            self.natives.lock().len(),
            self.sock_waits.lock().len(),
            self.sock_watches.lock().len(),
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // A running loop is alive (its thread is inside `_run`, which holds
        // it), so nothing it holds is garbage by way of it, and reporting
        // its references cannot free anything. Skip the walk: with a long
        // backlog (call_soon_threadsafe from a busy thread) it made a full
        // collection cost milliseconds. Reporting fewer references than an
        // object holds is safe for the collector: the referents count as
        // reachable from outside, which they are while the loop runs.
        if self.running_on.load(Ordering::Relaxed) != 0 {
            return Ok(());
        }
        // try_lock: the collector must never block; a queue that is locked
        // right now belongs to a running loop, which is not garbage anyway.
        // SAFETY: the GC calls tp_traverse with the GIL held.
        let py = unsafe { Python::assume_attached() };
        // A borrow is open only if the GC runs inside one (an allocation
        // while the queue is borrowed); its handles are alive then anyway.
        if let Some(ready) = self.shared.ready.try_borrow_mut(py) {
            for item in ready.iter() {
                match item {
                    Ready::Native(h) => handles::traverse_owned(h, &visit)?,
                    Ready::Foreign(h) => visit.call(h)?,
                    Ready::Io(t, _) => t.traverse(&visit)?,
                }
            }
        }
        if let Some(timers) = self.shared.timers.try_lock() {
            for h in timers.payloads() {
                handles::traverse_owned(h, &visit)?;
            }
        }
        if let Some(spare) = self.spare.try_borrow_mut(py) {
            for h in &spare.handles {
                handles::traverse_owned(h, &visit)?;
            }
        }
        if let Some(watchers) = self.watchers.try_lock() {
            for h in watchers.handles() {
                visit.call(h)?;
            }
            for f in watchers.fileobjs() {
                visit.call(f)?;
            }
        }
        if let Some(natives) = self.natives.try_lock() {
            for entry in natives.values() {
                entry.io.traverse(&visit)?;
            }
        }
        if let Some(kwargs) = self.loop_kwargs.get() {
            visit.call(kwargs)?;
        }
        if let Some(waits) = self.sock_waits.try_lock() {
            waits.traverse(&visit)?;
        }
        if let Some(watches) = self.sock_watches.try_lock() {
            for w in watches.values() {
                visit.call(w)?;
            }
        }
        if let Some(factory) = self.task_factory.try_lock() {
            if let Some(f) = factory.as_ref() {
                visit.call(f)?;
            }
        }
        if let Some(transports) = self.transports.try_borrow_mut(py) {
            if let Some(t) = transports.as_ref() {
                visit.call(t)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let queued = self.take_queued();
        let factory = self.task_factory.lock().take();
        // SAFETY: the GC calls tp_clear with the GIL held.
        let py = unsafe { Python::assume_attached() };
        let transports = self.transports.borrow_mut(py).take();
        drop((queued, factory, transports));
    }

    #[getter(_transports)]
    fn get_transports(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.transports(py).map(Bound::unbind)
    }

    #[setter(_transports)]
    fn set_transports(&self, py: Python<'_>, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.transports.borrow_mut(py), value);
        drop(old); // after the borrow: dropping may run Python code
    }

    #[getter(_closed)]
    fn get_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    #[setter(_closed)]
    fn set_closed(&self, value: bool) {
        self.shared.closed.store(value, Ordering::Relaxed);
    }

    #[getter(_stopping)]
    fn get_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping(&self, value: bool) {
        self.shared.stopping.store(value, Ordering::Relaxed);
    }

    #[getter(_debug)]
    fn get_debug_flag(&self) -> bool {
        self.shared.debug()
    }

    #[setter(_debug)]
    fn set_debug_flag(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.shared
            .debug
            .store(value.is_truthy()?, Ordering::Relaxed);
        Ok(())
    }

    #[getter(_task_factory)]
    fn get_task_factory_attr(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.task_factory.lock().as_ref().map(|f| f.clone_ref(py))
    }

    #[setter(_task_factory)]
    fn set_task_factory_attr(&self, value: Option<Py<PyAny>>) {
        let old = std::mem::replace(&mut *self.task_factory.lock(), value);
        drop(old);
    }
}
