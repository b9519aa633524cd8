//! `Handle` and `TimerHandle`: what `call_soon`/`call_later` return and what
//! the ready queue holds.
//!
//! They mirror `asyncio.Handle`/`asyncio.TimerHandle` (same methods, same
//! repr, same private attributes that third-party code peeks at) but are
//! native, so creating and running one costs no Python frame. Running a
//! handle enters its `contextvars.Context` with `PyContext_Enter/Exit`
//! instead of `Context.run`, and reports failures to the loop's exception
//! handler exactly as `Handle._run` does; only `KeyboardInterrupt` and
//! `SystemExit` escape, to stop `run_forever`.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::{CompareOp, PyTraverseError, PyVisit};
use pyo3::types::{PyFloat, PyTuple};

use crate::context_pool;
use crate::gil_cell::GilCell;
use crate::loop_core::LoopCore;
use crate::pyrefs::refs;

/// The call a handle makes; dropped when the handle is cancelled.
pub struct Callback {
    pub func: Py<PyAny>,
    pub args: Args,
    pub context: Py<PyAny>,
}

/// A callback's positional arguments, in one word: nothing, the single
/// argument itself, or a tuple of them. None or one argument are kept
/// without a tuple: asyncio's C `Future` schedules `callback(future)` for
/// every completion and a task `step()` for every step, and the tuple would
/// be built (or the empty one referenced) and dropped for nothing. `_args`
/// (and error reporting) build the tuple when asked, once.
///
/// An exact `tuple` held here is always the arguments tuple, so a single
/// argument that is itself an exact tuple is wrapped in one (rare: futures
/// and tasks pass themselves or nothing). One word instead of an enum's
/// two keeps a handle in pymalloc's 96-byte class, which shows in bursts
/// of `call_soon_threadsafe`.
pub struct Args(Option<Py<PyAny>>);

/// What an [`Args`] holds, borrowed.
pub enum ArgsView<'a> {
    Empty,
    One(&'a Py<PyAny>),
    /// An exact tuple.
    Tuple(&'a Py<PyAny>),
}

impl Args {
    /// No arguments (`call_soon(cb)`, a task's step): no object at all.
    pub const EMPTY: Args = Args(None);

    pub fn one(py: Python<'_>, arg: Py<PyAny>) -> PyResult<Args> {
        if is_exact_tuple(&arg) {
            return Ok(Args::tuple(PyTuple::new(py, [arg])?.unbind()));
        }
        Ok(Args(Some(arg)))
    }

    pub fn tuple(args: Py<PyTuple>) -> Args {
        Args(Some(args.into_any()))
    }

    pub fn view(&self) -> ArgsView<'_> {
        match &self.0 {
            None => ArgsView::Empty,
            Some(o) if is_exact_tuple(o) => ArgsView::Tuple(o),
            Some(o) => ArgsView::One(o),
        }
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Args {
        Args(self.0.as_ref().map(|o| o.clone_ref(py)))
    }

    /// The arguments as a tuple (a new one for a single argument).
    pub fn to_tuple(&self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        match self.view() {
            ArgsView::Empty => Ok(PyTuple::empty(py).unbind()),
            ArgsView::Tuple(t) => {
                // SAFETY: `view` checked it is exactly a tuple.
                Ok(unsafe { t.bind(py).clone().cast_into_unchecked::<PyTuple>() }.unbind())
            }
            ArgsView::One(o) => Ok(PyTuple::new(py, [o.bind(py)])?.unbind()),
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match &self.0 {
            None => Ok(()),
            Some(o) => visit.call(o),
        }
    }
}

fn is_exact_tuple(object: &Py<PyAny>) -> bool {
    // SAFETY: reading the type of a live object we hold a reference to.
    unsafe { ffi::PyTuple_CheckExact(object.as_ptr()) != 0 }
}

impl Callback {
    /// The function, the arguments and the context, without the drop's
    /// re-tracking of the context: the caller takes that on (see
    /// `ContextPool::give_back`).
    pub fn into_parts(self) -> (Py<PyAny>, Args, Py<PyAny>) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: each field is read exactly once out of a value whose own
        // drop never runs, so every reference is moved, not duplicated.
        unsafe {
            (
                std::ptr::read(&this.func),
                std::ptr::read(&this.args),
                std::ptr::read(&this.context),
            )
        }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        // The context may have been hidden from the GC while the loop owned
        // the handle (`untrack_owned`). CPython's Context dealloc unlinks the
        // object from the GC list unconditionally, so it must be tracked
        // again before our reference (possibly the last) goes.
        // SAFETY: a Callback lives only inside a Handle (a Python object) and
        // is dropped by its dealloc, `cancel` or `__clear__`, all with the GIL
        // held; the context is a live object we hold a reference to.
        unsafe { track_context(&self.context) }
    }
}

/// [`track_if_untracked`] for a handle's context, unless it is an unmade
/// copy: a mapping shared with other contexts, which the loop never
/// untracks (see `context_pool`).
///
/// # Safety
/// The GIL must be held.
pub(crate) unsafe fn track_context(context: &Py<PyAny>) {
    if !context_pool::is_unmade(context) {
        track_if_untracked(context.as_ptr());
    }
}

/// Put a GC object back under the cyclic GC if it was untracked.
///
/// # Safety
/// The GIL must be held and `ptr` must be a live GC-capable object.
pub(crate) unsafe fn track_if_untracked(ptr: *mut ffi::PyObject) {
    if ffi::PyObject_GC_IsTracked(ptr) == 0 {
        ffi::PyObject_GC_Track(ptr.cast());
    }
}

struct State {
    call: Option<Callback>,
    /// What few handles carry (debug mode's records, an odd deadline);
    /// boxed, so that other handles carry one pointer for it instead of
    /// three (with `Args` in one word and the deadline in `TimerHandle`,
    /// a plain handle fits pymalloc's 96-byte class, GC header included).
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// Where the handle was made (`_source_traceback`), when the loop was in
    /// debug mode then.
    source_traceback: Option<Py<PyAny>>,
    /// Repr frozen at cancel time in debug mode, as asyncio does.
    repr: Option<Py<PyAny>>,
    /// The deadline `call_at` was given, when `when()` must give back that
    /// object rather than a float (see `Deadline`).
    when: Option<Py<PyAny>>,
}

impl State {
    fn frozen_repr(&self) -> Option<&Py<PyAny>> {
        self.rare.as_ref().and_then(|d| d.repr.as_ref())
    }
}

#[pyclass(frozen, subclass, weakref, module = "tokioloop", name = "Handle")]
pub struct Handle {
    /// Only touched with the GIL held (see `gil_cell`).
    state: GilCell<State>,
    cancelled: AtomicBool,
    loop_: Py<PyAny>,
    /// True while the timer sits in the loop's heap, and after the heap
    /// handed it to the ready queue until the loop takes it up to run it.
    scheduled: AtomicBool,
    is_timer: bool,
}

/// A timer's deadline in loop seconds, and how `call_at` was given it:
/// asyncio keeps the number it was given, and `when()` answers it.
pub struct Deadline {
    pub at: f64,
    /// An `int` that the float holds exactly (`math.ceil(t)`: aiohttp).
    pub is_int: bool,
    /// Anything else but a float (an `int` subclass, `Decimal`, a huge
    /// `int`): kept as given.
    pub given: Option<Py<PyAny>>,
}

/// `call_later`/`call_at` handles: a `Handle` with a deadline and ordering.
/// The deadline lives here, not in `Handle`, so that plain handles stay in
/// pymalloc's 96-byte class.
#[pyclass(frozen, extends = Handle, module = "tokioloop", name = "TimerHandle")]
pub struct TimerHandle {
    when: f64,
    /// `call_at` was given an `int` deadline (exactly a float too):
    /// asyncio keeps the number it was given, so `when()` answers an `int`.
    when_is_int: bool,
}

impl Handle {
    /// A plain handle (`call_soon`).
    pub fn new(loop_: Py<PyAny>, call: Callback, source_traceback: Option<Py<PyAny>>) -> Self {
        Self::with_rare(loop_, call, source_traceback, None, false)
    }

    /// A timer (`call_later`/`call_at`) due at `when`.
    pub fn new_timer(
        loop_: Py<PyAny>,
        call: Callback,
        source_traceback: Option<Py<PyAny>>,
        when: Deadline,
    ) -> PyClassInitializer<TimerHandle> {
        let handle = Self::with_rare(loop_, call, source_traceback, when.given, true);
        PyClassInitializer::from(handle).add_subclass(TimerHandle {
            when: when.at,
            when_is_int: when.is_int,
        })
    }

    fn with_rare(
        loop_: Py<PyAny>,
        call: Callback,
        source_traceback: Option<Py<PyAny>>,
        given_when: Option<Py<PyAny>>,
        is_timer: bool,
    ) -> Self {
        let rare = (source_traceback.is_some() || given_when.is_some()).then(|| {
            Box::new(Rare {
                source_traceback,
                repr: None,
                when: given_when,
            })
        });
        Handle {
            state: GilCell::new(State {
                call: Some(call),
                rare,
            }),
            cancelled: AtomicBool::new(false),
            loop_,
            scheduled: AtomicBool::new(false),
            is_timer,
        }
    }

    /// The handle's context, made first if it is an unmade copy (see
    /// `context_pool`): from now on the handle holds that `Context`, so
    /// everyone who asks gets the same one. None once cancelled.
    pub fn made_context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let unmade = {
            let state = self.state.borrow_mut(py);
            match &state.call {
                None => return Ok(None),
                Some(c) if !context_pool::is_unmade(&c.context) => {
                    return Ok(Some(c.context.clone_ref(py)))
                }
                Some(c) => c.context.clone_ref(py),
            }
        };
        // Outside the borrow: allocating may run the GC, which traverses
        // the handle.
        let made = context_pool::made_from(py, &unmade)?;
        let replaced = {
            let mut state = self.state.borrow_mut(py);
            match state.call.as_mut() {
                Some(c) if c.context.is(&unmade) => {
                    Some(std::mem::replace(&mut c.context, made.clone_ref(py)))
                }
                // Cancelled meanwhile (the GC ran a finalizer that did).
                _ => None,
            }
        };
        drop((replaced, unmade)); // outside the borrow
        Ok(Some(made))
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    pub fn set_scheduled(&self, scheduled: bool) {
        self.scheduled.store(scheduled, Ordering::Relaxed);
    }

    /// Run the callback in its context. Returns `Err` only for exceptions
    /// that must stop the loop (`KeyboardInterrupt`, `SystemExit`, or one
    /// raised by the exception handler itself).
    pub fn run(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.is_cancelled() {
            return Ok(());
        }
        let (func, args) = {
            let state = this.state.borrow_mut(py);
            match &state.call {
                Some(c) => (c.func.clone_ref(py), c.args.clone_ref(py)),
                None => return Ok(()),
            }
        };
        let Some(context) = this.made_context(py)? else {
            return Ok(());
        };
        match call_in_context(py, &context, &func, &args) {
            Ok(()) => Ok(()),
            Err(err) => report_failure(slf, func, args, err),
        }
    }
}

/// What `batch_context` needs to run a handle in its own context instead
/// of the handle's: the callback, its arguments and the variables of the
/// handle's context (borrowed from it). Only for a handle nothing else can
/// see (the ready queue's reference alone, no weak reference) whose context
/// is private too (`context_pool::private_vars`): no one can then tell
/// which of two contexts holding the same variables the callback ran in.
/// A cancelled handle, or any other, answers None and runs as usual.
///
/// The callback and arguments are the handle's own, not new references:
/// nothing can cancel or clear a handle no one else can reach, so they
/// live as long as the caller's reference to the handle.
///
/// The caller must know the context layout checked out (the pool has a
/// `context_slot`).
pub fn private_call(handle: &Bound<'_, Handle>) -> Option<PrivateCall> {
    let py = handle.py();
    let this = handle.get();
    // SAFETY: the GIL is held (we have a `Bound`) and the handle is live;
    // `has_weakrefs` reads its type's layout.
    let private = !this.is_cancelled()
        && unsafe { ffi::Py_REFCNT(handle.as_ptr()) == 1 && !has_weakrefs(handle.as_ptr()) };
    if !private {
        return None;
    }
    let state = this.state.borrow_mut(py);
    let call = state.call.as_ref()?;
    // An unmade copy is the variables themselves, held by the handle.
    let vars = if context_pool::is_unmade(&call.context) {
        call.context.as_ptr()
    } else {
        // SAFETY: as above; the caller checked the layout. The variables
        // stay alive while the context (held by the handle) holds them.
        unsafe { context_pool::private_vars(call.context.as_ptr()) }
    };
    if vars.is_null() {
        return None;
    }
    // SAFETY: bitwise copies that are never dropped (`ManuallyDrop`) and
    // do not outlive the handle's own (see above).
    unsafe {
        Some(PrivateCall {
            func: ManuallyDrop::new(std::ptr::read(&call.func)),
            args: ManuallyDrop::new(std::ptr::read(&call.args)),
            vars,
        })
    }
}

/// A private handle's call (see [`private_call`]), borrowed from it.
pub struct PrivateCall {
    pub func: ManuallyDrop<Py<PyAny>>,
    pub args: ManuallyDrop<Args>,
    /// The variables of its context (borrowed).
    pub vars: *mut ffi::PyObject,
}

/// Make `context` the handle's context: the one its callback ran in (see
/// `batch_context`). Returns the old one, for the caller to drop outside
/// any borrow.
pub fn adopt_context(handle: &Bound<'_, Handle>, context: Py<PyAny>) -> Py<PyAny> {
    let old = {
        let mut state = handle.get().state.borrow_mut(handle.py());
        match state.call.as_mut() {
            Some(call) => std::mem::replace(&mut call.context, context),
            None => context,
        }
    };
    // A pooled copy may be hidden from the GC; CPython's context dealloc
    // expects it tracked (see `Callback`'s drop).
    // SAFETY: the GIL is held (we have a `Bound`); `old` is live.
    unsafe { track_context(&old) };
    old
}

/// Report a callback's failure as `Handle._run` does (see [`Handle::run`]).
pub fn report_failure(
    slf: &Bound<'_, Handle>,
    func: Py<PyAny>,
    args: Args,
    err: PyErr,
) -> PyResult<()> {
    let args = slf.get().args_tuple(slf.py(), args)?;
    report_error(slf, func, args, err)
}

/// Hide a handle the loop has just made from the cyclic GC while the loop
/// owns it (in the ready queue or the timer heap) and runs.
///
/// A handle queued on a running loop is not garbage (the loop holds it),
/// but as a tracked object it is traversed by every collection, and a
/// backlog of them (timers waiting to fire, a burst of
/// `call_soon_threadsafe`) is promoted to the old generations and traversed
/// again and again: a third of the time of those workloads. [`release`]
/// tracks it again when the loop lets go while someone else still holds
/// it, so cycles through it (an object that keeps its own timer handle)
/// stay collectable; [`expose_if_shared`] does it for the ready queue when
/// the loop stops running.
/// Its context (a fresh copy, or a task's) is hidden as well, for the same
/// reason; `Callback`'s drop and `get_context` track it again.
pub fn untrack_owned(handle: &Bound<'_, Handle>) {
    let context = handle
        .get()
        .state
        .borrow_mut(handle.py())
        .call
        .as_ref()
        .filter(|c| !context_pool::is_unmade(&c.context))
        .map(|c| c.context.as_ptr());
    // SAFETY: the GIL is held (we have a `Bound`); untracking a GC object is
    // always allowed (a no-op when untracked). PyO3's dealloc of the handle
    // untracks only if tracked; the context is re-tracked before it can be
    // freed (`Callback`'s drop).
    unsafe {
        ffi::PyObject_GC_UnTrack(handle.as_ptr().cast());
        if let Some(context) = context {
            ffi::PyObject_GC_UnTrack(context.cast());
        }
    }
}

/// The GC's view of a handle the loop holds: a tracked one is visited as
/// usual; an untracked one held by the loop alone is part of the loop, so
/// its contents are visited as the loop's own (an unclosed loop whose queue
/// refers back to it, through `loop_` or a bound method, stays collectable,
/// as asyncio's is). One that someone else also holds is alive anyway.
pub fn traverse_owned(handle: &Py<Handle>, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    let ptr = handle.as_ptr();
    // SAFETY: the GC calls traversals with the GIL held; `ptr` is live while
    // the loop holds `handle`.
    let (tracked, refcnt) = unsafe { (ffi::PyObject_GC_IsTracked(ptr) != 0, ffi::Py_REFCNT(ptr)) };
    if tracked {
        visit.call(handle)
    } else if refcnt == 1 {
        handle.get().traverse_contents(visit)
    } else {
        Ok(())
    }
}

/// The loop drops its reference to a handle it owned: if the handle lives
/// on elsewhere, make it visible to the cyclic GC again (see
/// [`untrack_owned`]); if ours was the last reference it is freed now.
pub fn release(py: Python<'_>, handle: Py<Handle>) {
    expose_if_shared(py, &handle);
    drop(handle);
}

/// The loop has run `handle` and is letting go of it: if nothing else can
/// ever see it again, reset it and give it back (`Ok`) for `call_soon` to
/// reuse, instead of freeing it and allocating the next one; otherwise give
/// it back unchanged (`Err`) for [`release`].
///
/// "Nothing else" means: ours is the only reference, no weak reference
/// exists (a weakref would see the reused handle come back to life), it is
/// exactly a `Handle` (not a `TimerHandle` or a Python subclass) of `loop_`,
/// with no debug record (a creation traceback, or a repr frozen by a cancel
/// in debug mode). The reset handle holds no callback, is
/// not cancelled, and is hidden from the cyclic GC while unused (the loop's
/// traversal visits what it holds, see [`traverse_owned`]).
pub fn recycle(
    py: Python<'_>,
    handle: Py<Handle>,
    loop_: *mut ffi::PyObject,
) -> Result<(Py<Handle>, Option<Callback>), Py<Handle>> {
    let ptr = handle.as_ptr();
    let this = handle.get();
    // SAFETY: the GIL is held (`py`) and `ptr` is a live object we own a
    // reference to; `has_weakrefs` reads its type's layout.
    let sole = unsafe {
        ffi::Py_REFCNT(ptr) == 1
            && ffi::Py_TYPE(ptr) == <Handle as pyo3::PyTypeInfo>::type_object_raw(py)
            && !has_weakrefs(ptr)
    };
    if !sole || this.loop_.as_ptr() != loop_ || this.state.borrow_mut(py).rare.is_some() {
        return Err(handle);
    }
    // Hidden before the callback goes, so that a collection triggered by
    // dropping it cannot list the handle either.
    // SAFETY: as above; untracking is a no-op for an untracked object.
    unsafe { ffi::PyObject_GC_UnTrack(ptr.cast()) };
    this.cancelled.store(false, Ordering::Relaxed);
    // The caller drops the callback (a cancelled handle has none) outside
    // any borrow: dropping may run Python code, which cannot reach this
    // handle (no reference, no weakref, not tracked).
    let call = this.state.borrow_mut(py).call.take();
    Ok((handle, call))
}

/// Give a handle from [`recycle`] its new callback. It stays hidden from
/// the cyclic GC, as a handle the loop owns may be (see [`untrack_owned`]):
/// re-tracking it for the few instructions it is queued cost call_soon ~7%
/// (the GC list links of two objects written twice per call). The caller
/// tracks it instead when the loop is not running (see [`expose_if_shared`]).
pub fn reuse(py: Python<'_>, handle: &Py<Handle>, call: Callback) {
    let old = handle.get().state.borrow_mut(py).call.replace(call);
    debug_assert!(old.is_none(), "a recycled handle holds no callback");
    drop(old);
}

/// Make a handle the loop keeps visible to the cyclic GC again if someone
/// else holds it too (and its context with it).
///
/// Handles in the ready queue are hidden from the GC only while the loop
/// runs: a running loop is alive, so a cycle through a handle it holds is
/// not garbage yet. A loop that is not running may be dropped unclosed with
/// its queue; a handle that user code also holds (an object keeping its
/// own handle, which refers back to the loop) must then be seen by the GC,
/// or the cycle, loop included, is never collected. The loop calls this for
/// its ready queue when `run_forever` returns, and scheduling while the
/// loop is not running leaves handles tracked. Timers scheduled while it
/// runs are exposed at the next full collection after it stops (see
/// `LoopCore::_expose_hidden_timers`).
pub fn expose_if_shared(py: Python<'_>, handle: &Py<Handle>) {
    let ptr = handle.as_ptr();
    // SAFETY: the GIL is held (`py`) and `ptr` is a live object the caller
    // holds a reference to.
    if unsafe { ffi::Py_REFCNT(ptr) } > 1 {
        track(py, handle);
    }
}

/// Put a handle and its context under the cyclic GC (a no-op for what is
/// tracked already).
pub fn track(py: Python<'_>, handle: &Py<Handle>) {
    if let Some(c) = handle.get().state.borrow_mut(py).call.as_ref() {
        // SAFETY: the GIL is held (`py`); the context is live while the
        // handle holds it. Tracking runs no Python code.
        unsafe { track_context(&c.context) }
    }
    // SAFETY: as above; the handle is a live GC object.
    unsafe { track_if_untracked(handle.as_ptr()) }
}

/// Whether the object has weak references (or might: a layout we do not
/// know counts as yes).
///
/// # Safety
/// The GIL must be held and `ptr` must be a live object.
unsafe fn has_weakrefs(ptr: *mut ffi::PyObject) -> bool {
    let offset = (*ffi::Py_TYPE(ptr)).tp_weaklistoffset;
    if offset <= 0 {
        return true;
    }
    // `tp_weaklistoffset` is where the object keeps its list of weak
    // references, NULL when there are none.
    let list = ptr.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>();
    !(*list).is_null()
}

/// `context.run(func, *args)` without a Python frame.
fn call_in_context(
    py: Python<'_>,
    context: &Py<PyAny>,
    func: &Py<PyAny>,
    args: &Args,
) -> PyResult<()> {
    // SAFETY: all pointers are live references owned by the caller for the
    // duration of the call; PyContext_Enter/Exit are paired on this thread and
    // the GIL is held (we have `py`).
    unsafe {
        if ffi::PyContext_Enter(context.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        let result = call(py, func, args);
        // Exit even on error; an exit failure (context switched inside the
        // callback) outranks the callback's own result.
        if ffi::PyContext_Exit(context.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        result
    }
}

/// `func(*args)` in the current context, without a Python frame.
pub fn call(py: Python<'_>, func: &Py<PyAny>, args: &Args) -> PyResult<()> {
    // SAFETY: the pointers are live references owned by the caller for the
    // duration of the call, and the GIL is held (we have `py`).
    unsafe {
        let result = match args.view() {
            ArgsView::Empty => ffi::PyObject_CallNoArgs(func.as_ptr()),
            ArgsView::One(arg) => ffi::PyObject_CallOneArg(func.as_ptr(), arg.as_ptr()),
            ArgsView::Tuple(args) => match ffi::PyTuple_GET_SIZE(args.as_ptr()) {
                0 => ffi::PyObject_CallNoArgs(func.as_ptr()),
                1 => {
                    ffi::PyObject_CallOneArg(func.as_ptr(), ffi::PyTuple_GET_ITEM(args.as_ptr(), 0))
                }
                _ => ffi::PyObject_Call(func.as_ptr(), args.as_ptr(), std::ptr::null_mut()),
            },
        };
        Bound::from_owned_ptr_or_err(py, result).map(drop)
    }
}

fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

fn report_error(
    slf: &Bound<'_, Handle>,
    func: Py<PyAny>,
    args: Py<PyTuple>,
    err: PyErr,
) -> PyResult<()> {
    let py = slf.py();
    if is_fatal(py, &err) {
        return Err(err);
    }
    let exc = err.into_value(py);
    refs(py).report_callback_error.bind(py).call1((
        slf.get().loop_.bind(py),
        slf,
        func,
        args,
        exc,
    ))?;
    Ok(())
}

#[pymethods]
impl Handle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.cancelled.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        // The loop's state (debug flag, cancelled-timer count) through the
        // loop object the handle holds: no per-handle reference to it.
        let core = this.loop_.bind(py).cast::<LoopCore>().ok();
        let debug = core.is_some_and(|c| c.get().debug_flag());
        let frozen_repr = if debug {
            // Computed before the callback is dropped, as asyncio does.
            Some(refs(py).handle_repr.bind(py).call1((slf,))?.unbind())
        } else {
            None
        };
        let dropped = {
            let mut state = this.state.borrow_mut(py);
            let old_repr = match frozen_repr {
                Some(r) => state.rare.get_or_insert_with(Box::default).repr.replace(r),
                None => None,
            };
            (state.call.take(), old_repr)
        };
        drop(dropped); // outside the borrow: dropping may run Python code
        if this.is_timer && this.scheduled.load(Ordering::Relaxed) {
            if let Some(core) = core {
                core.get().note_timer_cancelled();
            }
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let context = self.made_context(py)?;
        if let Some(c) = &context {
            // Handed out: it may now end up in a cycle the GC must see.
            // SAFETY: the GIL is held (`py`); the context is live.
            unsafe { track_if_untracked(c.as_ptr()) };
        }
        Ok(context)
    }

    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::run(slf)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let frozen = slf
            .get()
            .state
            .borrow_mut(py)
            .frozen_repr()
            .map(|r| r.clone_ref(py));
        if let Some(frozen) = frozen {
            return Ok(frozen);
        }
        Ok(refs(py).handle_repr.bind(py).call1((slf,))?.unbind())
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow_mut(py)
            .call
            .as_ref()
            .map(|c| c.func.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> PyResult<Option<Py<PyTuple>>> {
        let args = self
            .state
            .borrow_mut(py)
            .call
            .as_ref()
            .map(|c| c.args.clone_ref(py));
        match args {
            Some(args) => Ok(Some(self.args_tuple(py, args)?)),
            None => Ok(None),
        }
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.get_context(py)
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let state = self.state.borrow_mut(py);
        let tb = state
            .rare
            .as_ref()
            .and_then(|d| d.source_traceback.as_ref());
        tb.map(|t| t.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse_contents(&visit)
    }

    fn __clear__(&self) {
        // SAFETY: tp_clear is only called by the cyclic GC, which runs with
        // the GIL held.
        let py = unsafe { Python::assume_attached() };
        let dropped = self
            .state
            .try_borrow_mut(py)
            .map(|mut state| (state.call.take(), state.rare.take()));
        drop(dropped); // after the borrow ends: dropping may run Python code
    }
}

impl Handle {
    /// `args` (this handle's arguments) as a tuple; a single argument's
    /// tuple is built once and kept, so `_args` is the same object each
    /// time, as in asyncio.
    fn args_tuple(&self, py: Python<'_>, args: Args) -> PyResult<Py<PyTuple>> {
        let ArgsView::One(_) = args.view() else {
            return args.to_tuple(py);
        };
        // Built outside the borrow: allocating may run the GC.
        let tuple = args.to_tuple(py)?;
        let replaced = {
            let mut state = self.state.borrow_mut(py);
            match state.call.as_mut() {
                Some(c) if matches!(c.args.view(), ArgsView::One(_)) => Some(std::mem::replace(
                    &mut c.args,
                    Args::tuple(tuple.clone_ref(py)),
                )),
                _ => None,
            }
        };
        drop((replaced, args)); // outside the borrow
        Ok(tuple)
    }

    fn traverse_contents(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        // SAFETY: tp_traverse is only called by the cyclic GC, which runs
        // with the GIL held.
        let py = unsafe { Python::assume_attached() };
        // A borrow is open only if the GC runs from inside one (an
        // allocation while we look at the state): its contents are live.
        if let Some(state) = self.state.try_borrow_mut(py) {
            if let Some(c) = &state.call {
                visit.call(&c.func)?;
                c.args.traverse(visit)?;
                visit.call(&c.context)?;
            }
            if let Some(rare) = &state.rare {
                for object in [&rare.source_traceback, &rare.repr, &rare.when]
                    .into_iter()
                    .flatten()
                {
                    visit.call(object)?;
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl TimerHandle {
    fn when(slf: PyRef<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::_when(slf)
    }

    #[getter]
    fn _when(slf: PyRef<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let base = slf.as_super();
        let given = {
            let state = base.state.borrow_mut(py);
            state
                .rare
                .as_ref()
                .and_then(|r| r.when.as_ref().map(|w| w.clone_ref(py)))
        };
        if let Some(given) = given {
            return Ok(given);
        }
        if slf.when_is_int {
            // SAFETY: the GIL is held; PyLong_FromDouble returns a new
            // reference or NULL with an exception set.
            let int = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromDouble(slf.when)) };
            return Ok(int?.unbind());
        }
        Ok(PyFloat::new(py, slf.when).into_any().unbind())
    }

    #[getter]
    fn _scheduled(slf: PyRef<'_, Self>) -> bool {
        slf.as_super().scheduled.load(Ordering::Relaxed)
    }

    fn __hash__(slf: PyRef<'_, Self>) -> isize {
        // hash(float) semantics are not needed, only consistency with __eq__.
        let bits = slf.when.to_bits();
        (bits ^ (bits >> 32)) as isize
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (slf, &other);
        let (wa, wb) = (a.get().when, b.get().when);
        let result = match op {
            CompareOp::Lt => wa < wb,
            CompareOp::Le => wa < wb || timer_eq(py, a, b)?,
            CompareOp::Gt => wa > wb,
            CompareOp::Ge => wa > wb || timer_eq(py, a, b)?,
            CompareOp::Eq => timer_eq(py, a, b)?,
            CompareOp::Ne => !timer_eq(py, a, b)?,
        };
        Ok(pyo3::types::PyBool::new(py, result)
            .to_owned()
            .into_any()
            .unbind())
    }
}

/// asyncio's `TimerHandle.__eq__`: same deadline, callback, args and state.
fn timer_eq(
    py: Python<'_>,
    a: &Bound<'_, TimerHandle>,
    b: &Bound<'_, TimerHandle>,
) -> PyResult<bool> {
    if a.is(b) {
        return Ok(true);
    }
    if a.get().when != b.get().when {
        return Ok(false);
    }
    let (a, b) = (a.as_super().get(), b.as_super().get());
    if a.is_cancelled() != b.is_cancelled() {
        return Ok(false);
    }
    let (fa, aa) = {
        let s = a.state.borrow_mut(py);
        match &s.call {
            Some(c) => (Some(c.func.clone_ref(py)), Some(c.args.clone_ref(py))),
            None => (None, None),
        }
    };
    let aa = aa.map(|args| a.args_tuple(py, args)).transpose()?;
    let (fb, ab) = {
        let s = b.state.borrow_mut(py);
        match &s.call {
            Some(c) => (Some(c.func.clone_ref(py)), Some(c.args.clone_ref(py))),
            None => (None, None),
        }
    };
    let ab = ab.map(|args| b.args_tuple(py, args)).transpose()?;
    let same = |x: Option<Py<PyAny>>, y: Option<Py<PyAny>>| -> PyResult<bool> {
        match (x, y) {
            (None, None) => Ok(true),
            (Some(x), Some(y)) => x.bind(py).eq(y.bind(py)),
            _ => Ok(false),
        }
    };
    Ok(same(fa, fb)? && same(aa.map(|t| t.into_any()), ab.map(|t| t.into_any()))?)
}

/// `extract_stack()` for handles made in debug mode.
pub fn source_traceback(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(refs(py).extract_stack.bind(py).call0()?.unbind())
}
