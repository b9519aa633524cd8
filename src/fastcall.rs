//! Hand-written `METH_FASTCALL` entry points for the scheduling methods:
//! `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at`; and
//! plain C entry points for `time`, `get_debug`, `create_future` (`METH_NOARGS`)
//! and `create_task` (`METH_FASTCALL`, with PyO3's generic method behind it
//! for unusual calls).
//!
//! These are the hottest methods of the loop: besides user code, asyncio's C
//! `Future` calls `loop.call_soon(callback, future, context=ctx)` for every
//! completion, and servers arm and cancel a timer per request. PyO3's generic
//! `*args`/keyword extraction and trampoline cost about 150 instructions a
//! call; the signatures here are fixed and simple (`[lead,] callback, *args,
//! context=None`), so they are parsed by hand. `LoopCore` has no
//! `#[pymethods]` of these names: `install` adds these to the type.
//!
//! asyncio's C `Future` also calls `loop.get_debug()` for every future and
//! task it makes, and `create_future`/`create_task` are per-operation too;
//! PyO3's trampoline (GIL-count bookkeeping, a subtype check of `self`
//! that walks `Loop`'s MRO) costs more than these methods' own work.
//!
//! All of these are method descriptors of `LoopCore`: CPython checks that
//! `self` is a `LoopCore` instance before calling them (`descr_check`), so
//! they take it unchecked.

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple, PyType};

use crate::handles::Args;
use crate::loop_core::LoopCore;

/// `[lead,] callback, *args, context=None`, as asyncio's methods take them.
pub(crate) struct CallArgs<'py> {
    /// `delay` of `call_later`, `when` of `call_at`; None for the others.
    pub lead: Option<Bound<'py, PyAny>>,
    pub callback: Bound<'py, PyAny>,
    pub args: Args,
    pub context: Option<Bound<'py, PyAny>>,
}

type Method = for<'py> fn(&Bound<'py, LoopCore>, CallArgs<'py>) -> PyResult<Py<PyAny>>;

/// Parse a fastcall frame and run `method` on it.
///
/// # Safety
/// The GIL is held; `slf` is a live object; `args` holds `nargs` positional
/// then `len(kwnames)` keyword argument values, all live (CPython's
/// `METH_FASTCALL | METH_KEYWORDS` calling convention).
unsafe fn entry(
    name: &str,
    lead: Option<&str>,
    method: Method,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = Python::assume_attached();
    let outcome = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<PyAny>> {
        // The method descriptor has checked the type of `self`.
        let slf = Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<LoopCore>();
        let call = parse(py, name, lead, args, nargs as usize, kwnames)?;
        method(&slf, call)
    }));
    finish(py, name, outcome)
}

/// A method's outcome as CPython wants it: a new reference, or NULL with
/// the exception set (a panic becomes a `PanicException`).
pub(crate) fn finish(
    py: Python<'_>,
    name: &str,
    outcome: std::thread::Result<PyResult<Py<PyAny>>>,
) -> *mut ffi::PyObject {
    match outcome {
        Ok(Ok(result)) => result.into_ptr(),
        Ok(Err(err)) => {
            err.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PanicException::new_err(format!("panic in {name}")).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// As for `entry`.
unsafe fn parse<'py>(
    py: Python<'py>,
    name: &str,
    lead_name: Option<&str>,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> PyResult<CallArgs<'py>> {
    let arg = |i: usize| Bound::from_borrowed_ptr(py, *args.add(i));
    let leading = usize::from(lead_name.is_some());
    // The usual call: everything positional, plus `context=` when given
    // (asyncio's C Future passes it by keyword). Keyword names are interned,
    // so a pointer comparison finds it.
    if nargs > leading {
        let context = if kwnames.is_null() {
            Some(None)
        } else if ffi::PyTuple_GET_SIZE(kwnames) == 1
            && kw_is(py, ffi::PyTuple_GET_ITEM(kwnames, 0), &KW_CONTEXT)
        {
            Some(Some(arg(nargs)))
        } else {
            None
        };
        if let Some(context) = context {
            return Ok(CallArgs {
                lead: (leading == 1).then(|| arg(0)),
                callback: arg(leading),
                args: positional_tuple(py, args, nargs, leading + 1)?,
                context,
            });
        }
    }
    let mut lead = (leading == 1 && nargs > 0).then(|| arg(0));
    let mut callback = (nargs > leading).then(|| arg(leading));
    let rest = positional_tuple(py, args, nargs, leading + 1)?;
    let mut context = None;
    if !kwnames.is_null() {
        let kwnames = Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>();
        for (i, kw) in kwnames.iter().enumerate() {
            let kw = kw.cast_into::<PyString>()?;
            // Keyword names are interned: compare pointers before text.
            let slot = if kw.is(intern!(py, "context")) {
                &mut context
            } else {
                let text = kw.to_str()?;
                if text == "context" {
                    &mut context
                } else if text == "callback" {
                    &mut callback
                } else if Some(text) == lead_name {
                    &mut lead
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "{name}() got an unexpected keyword argument '{kw}'"
                    )));
                }
            };
            if slot.replace(arg(nargs + i)).is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{name}() got multiple values for argument '{kw}'"
                )));
            }
        }
    }
    let missing: Vec<String> = [
        (lead_name, lead.is_none()),
        (Some("callback"), callback.is_none()),
    ]
    .into_iter()
    .filter_map(|(n, absent)| n.filter(|_| absent).map(|n| format!("'{n}'")))
    .collect();
    match (lead, callback) {
        (lead, Some(callback)) if missing.is_empty() => Ok(CallArgs {
            lead,
            callback,
            args: rest,
            context,
        }),
        _ => Err(PyTypeError::new_err(format!(
            "{name}() missing {} required positional argument{}: {}",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(" and "),
        ))),
    }
}

/// A keyword name the fast paths look for, and the string objects it is
/// recognised by without comparing text.
struct KwName {
    text: &'static CStr,
    /// Our interned copy.
    interned: PyOnceLock<Py<PyString>>,
    /// The first other string object seen with this text: callers pass their
    /// own (on 3.11 asyncio's C `Future` passes a static string that is not
    /// the interned one), held here so its address stays its own.
    seen: PyOnceLock<Py<PyString>>,
}

static KW_CONTEXT: KwName = KwName {
    text: c"context",
    interned: PyOnceLock::new(),
    seen: PyOnceLock::new(),
};
static KW_NAME: KwName = KwName {
    text: c"name",
    interned: PyOnceLock::new(),
    seen: PyOnceLock::new(),
};

/// Whether `kw`, a keyword name from a fastcall frame, is `name.text`: by
/// pointer with the strings known for it, else by text.
///
/// # Safety
/// The GIL is held and `kw` is a live object.
unsafe fn kw_is(py: Python<'_>, kw: *mut ffi::PyObject, name: &KwName) -> bool {
    let interned = name.interned.get_or_init(py, || {
        let text = name.text.to_str().expect("ASCII keyword name");
        PyString::intern(py, text).unbind()
    });
    if kw == interned.as_ptr() || name.seen.get(py).is_some_and(|s| kw == s.as_ptr()) {
        return true;
    }
    if ffi::PyUnicode_Check(kw) == 0
        || ffi::PyUnicode_CompareWithASCIIString(kw, name.text.as_ptr()) != 0
    {
        return false;
    }
    let string = Bound::from_borrowed_ptr(py, kw).cast_into_unchecked::<PyString>();
    let _ = name.seen.set(py, string.unbind());
    true
}

/// `args[skip..nargs]`, the callback's own arguments: nothing, or one object
/// as is (no tuple until someone asks for `_args`), otherwise a tuple.
///
/// # Safety
/// As for `entry`: the GIL is held and `args` holds `nargs` live objects.
unsafe fn positional_tuple(
    py: Python<'_>,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    skip: usize,
) -> PyResult<Args> {
    let len = nargs.saturating_sub(skip);
    if len == 0 {
        return Ok(Args::EMPTY);
    }
    if len == 1 {
        return Args::one(py, Bound::from_borrowed_ptr(py, *args.add(skip)).unbind());
    }
    // A new tuple whose slots we fill with new references, as
    // PyTuple_SET_ITEM expects.
    let tuple = ffi::PyTuple_New(len as ffi::Py_ssize_t);
    let tuple = Bound::from_owned_ptr_or_err(py, tuple)?;
    for i in 0..len {
        let item = *args.add(skip + i);
        ffi::Py_INCREF(item);
        ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, item);
    }
    Ok(Args::tuple(tuple.cast_into_unchecked::<PyTuple>().unbind()))
}

macro_rules! fastcall_method {
    ($fn_name:ident, $py_name:literal, $lead:expr, $method:expr) => {
        unsafe extern "C" fn $fn_name(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: called by CPython with the fastcall convention.
            unsafe { entry($py_name, $lead, $method, slf, args, nargs, kwnames) }
        }
    };
}

fastcall_method!(call_soon, "call_soon", None, LoopCore::call_soon_impl);
fastcall_method!(
    call_soon_threadsafe,
    "call_soon_threadsafe",
    None,
    LoopCore::call_soon_threadsafe_impl
);
fastcall_method!(
    call_later,
    "call_later",
    Some("delay"),
    LoopCore::call_later_impl
);
fastcall_method!(call_at, "call_at", Some("when"), LoopCore::call_at_impl);

/// `get_debug()` (`METH_NOARGS`).
unsafe extern "C" fn get_debug(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the GIL held and a live `self` whose
    // type the method descriptor has checked; the result is a new reference.
    unsafe {
        let py = Python::assume_attached();
        let core = pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>();
        let result = if core.get().debug_flag() {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        };
        ffi::Py_INCREF(result);
        result
    }
}

/// `time()` (`METH_NOARGS`): aiohttp reads the loop's clock for every
/// request, and PyO3's trampoline cost more than the clock read.
unsafe extern "C" fn time(
    _slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the GIL held; `PyFloat_FromDouble`
    // returns a new reference, or NULL with MemoryError set, which is what
    // a C method returns either way.
    unsafe { ffi::PyFloat_FromDouble(crate::clock::monotonic()) }
}

/// `create_future()` (`METH_NOARGS`).
unsafe extern "C" fn create_future(
    slf: *mut ffi::PyObject,
    _unused: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as for `get_debug`.
    unsafe {
        let py = Python::assume_attached();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let core = pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>();
            LoopCore::create_future(&core).map(Bound::unbind)
        }));
        finish(py, "create_future", outcome)
    }
}

/// PyO3's own `create_task` method (the `#[pymethods]` one this entry point
/// replaces on the type), for calls the fast path does not take.
static CREATE_TASK_GENERIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `create_task(coro, *, name=None, context=None)` (`METH_FASTCALL |
/// METH_KEYWORDS`): the coroutine by position, and `name=`/`context=` by
/// keyword, are taken here; anything else (`coro=`, errors) goes to PyO3's
/// generic method, so its messages stay those of the Python signature.
unsafe extern "C" fn create_task(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the fastcall convention: the GIL is
    // held, `self` is a live `LoopCore` (checked by the descriptor), `args`
    // holds `nargs` positional then `len(kwnames)` keyword values.
    unsafe {
        let py = Python::assume_attached();
        let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
        let nkw = if kwnames.is_null() {
            0
        } else {
            ffi::PyTuple_GET_SIZE(kwnames)
        };
        let mut name = None;
        let mut context = None;
        let mut simple = nargs == 1;
        for i in 0..nkw {
            if !simple {
                break;
            }
            let kw = ffi::PyTuple_GET_ITEM(kwnames, i);
            let value = Bound::from_borrowed_ptr(py, *args.offset(nargs + i));
            // Interned names: pointer comparisons; anything else is unusual.
            let slot = if kw_is(py, kw, &KW_NAME) {
                &mut name
            } else if kw_is(py, kw, &KW_CONTEXT) {
                &mut context
            } else {
                simple = false;
                break;
            };
            simple = slot.replace(value).is_none();
        }
        if simple {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let core = pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<LoopCore>();
                let coro = Bound::from_borrowed_ptr(py, *args);
                LoopCore::create_task(&core, coro, name, context).map(Bound::unbind)
            }));
            return finish(py, "create_task", outcome);
        }
        let Some(generic) = CREATE_TASK_GENERIC.get(py) else {
            PyTypeError::new_err("create_task is not initialised").restore(py);
            return std::ptr::null_mut();
        };
        // `generic(self, *args, **kwargs)`: self in front of the same frame.
        let total = (nargs + nkw) as usize;
        let mut frame = Vec::with_capacity(total + 1);
        frame.push(slf);
        frame.extend_from_slice(std::slice::from_raw_parts(args, total));
        ffi::PyObject_Vectorcall(
            generic.as_ptr(),
            frame.as_ptr(),
            (nargs + 1) as usize,
            kwnames,
        )
    }
}

type MethodSpec = (
    &'static CStr,
    ffi::PyCFunctionFastWithKeywords,
    &'static CStr,
);

type NoArgsSpec = (&'static CStr, ffi::PyCFunction, &'static CStr);

const NOARGS_METHODS: [NoArgsSpec; 3] = [
    (
        c"time",
        time,
        c"time($self, /)\n--\n\nThe loop's clock: time.monotonic().",
    ),
    (
        c"get_debug",
        get_debug,
        c"get_debug($self, /)\n--\n\nThe loop's debug flag.",
    ),
    (
        c"create_future",
        create_future,
        c"create_future($self, /)\n--\n\nCreate a Future object attached to the loop.",
    ),
];

const METHODS: [MethodSpec; 5] = [
    (
        c"create_task",
        create_task,
        c"create_task($self, coro, *, name=None, context=None)\n--\n\n\
          Schedule a coroutine object.",
    ),
    (
        c"call_soon",
        call_soon,
        c"call_soon($self, callback, *args, context=None)\n--\n\n\
          Arrange for a callback to be called as soon as possible.",
    ),
    (
        c"call_soon_threadsafe",
        call_soon_threadsafe,
        c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\n\
          Like call_soon(), but thread-safe.",
    ),
    (
        c"call_later",
        call_later,
        c"call_later($self, delay, callback, *args, context=None)\n--\n\n\
          Arrange for a callback to be called at a given time.",
    ),
    (
        c"call_at",
        call_at,
        c"call_at($self, when, callback, *args, context=None)\n--\n\n\
          Like call_later(), but uses an absolute time.",
    ),
];

/// Add the methods above to the `LoopCore` type.
pub fn install(py: Python<'_>, loop_type: &Bound<'_, PyType>) -> PyResult<()> {
    let generic = loop_type.getattr("create_task")?.unbind();
    let _ = CREATE_TASK_GENERIC.set(py, generic);
    let defs = METHODS
        .into_iter()
        .map(|(name, function, doc)| {
            (
                name,
                ffi::PyMethodDefPointer {
                    PyCFunctionFastWithKeywords: function,
                },
                ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
                doc,
            )
        })
        .chain(NOARGS_METHODS.into_iter().map(|(name, function, doc)| {
            (
                name,
                ffi::PyMethodDefPointer {
                    PyCFunction: function,
                },
                ffi::METH_NOARGS,
                doc,
            )
        }));
    for (name, meth, flags, doc) in defs {
        add_method(loop_type, name, meth, flags, doc)?;
    }
    Ok(())
}

/// Add one C method to the type `tp`.
pub(crate) fn add_method(
    tp: &Bound<'_, PyType>,
    name: &'static CStr,
    meth: ffi::PyMethodDefPointer,
    flags: std::os::raw::c_int,
    doc: &'static CStr,
) -> PyResult<()> {
    // The definition must outlive the type: leaked once per import.
    let def = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: meth,
        ml_flags: flags,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: the GIL is held; `tp` is a live type object and `def` lives
    // forever; a NULL result has an exception set.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(tp.py(), ffi::PyDescr_NewMethod(tp.as_type_ptr(), def))?
    };
    let name = name
        .to_str()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    tp.setattr(name, descr)
}
