//! Hand-written `METH_FASTCALL` entry points for the scheduling methods:
//! `call_soon`, `call_soon_threadsafe`, `call_later` and `call_at`.
//!
//! These are the hottest methods of the loop: besides user code, asyncio's C
//! `Future` calls `loop.call_soon(callback, future, context=ctx)` for every
//! completion, and servers arm and cancel a timer per request. PyO3's generic
//! `*args`/keyword extraction and trampoline cost about 150 instructions a
//! call; the signatures here are fixed and simple (`[lead,] callback, *args,
//! context=None`), so they are parsed by hand. `LoopCore` has no
//! `#[pymethods]` of these names: `install` adds these to the type.

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};

use crate::loop_core::LoopCore;

/// `[lead,] callback, *args, context=None`, as asyncio's methods take them.
pub(crate) struct CallArgs<'py> {
    /// `delay` of `call_later`, `when` of `call_at`; None for the others.
    pub lead: Option<Bound<'py, PyAny>>,
    pub callback: Bound<'py, PyAny>,
    pub args: Bound<'py, PyTuple>,
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
        let slf = Bound::from_borrowed_ptr(py, slf).cast_into::<LoopCore>()?;
        let call = parse(py, name, lead, args, nargs as usize, kwnames)?;
        method(&slf, call)
    }));
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
            && ffi::PyTuple_GET_ITEM(kwnames, 0) == intern!(py, "context").as_ptr()
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

/// `args[skip..nargs]` as a tuple (the callback's own arguments).
///
/// # Safety
/// As for `entry`: the GIL is held and `args` holds `nargs` live objects.
unsafe fn positional_tuple<'py>(
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    skip: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let len = nargs.saturating_sub(skip);
    // PyTuple_New(0) is the shared empty tuple; otherwise a new tuple whose
    // slots we fill with new references, as PyTuple_SET_ITEM expects.
    let tuple = ffi::PyTuple_New(len as ffi::Py_ssize_t);
    let tuple = Bound::from_owned_ptr_or_err(py, tuple)?;
    for i in 0..len {
        let item = *args.add(skip + i);
        ffi::Py_INCREF(item);
        ffi::PyTuple_SET_ITEM(tuple.as_ptr(), i as ffi::Py_ssize_t, item);
    }
    Ok(tuple.cast_into_unchecked::<PyTuple>())
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

type MethodSpec = (
    &'static CStr,
    ffi::PyCFunctionFastWithKeywords,
    &'static CStr,
);

const METHODS: [MethodSpec; 4] = [
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

/// Add the scheduling methods to the `LoopCore` type.
pub fn install(py: Python<'_>, loop_type: &Bound<'_, PyType>) -> PyResult<()> {
    for (name, function, doc) in METHODS {
        // The definition must outlive the type: leaked once per import.
        let def = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer {
                PyCFunctionFastWithKeywords: function,
            },
            ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            ml_doc: doc.as_ptr(),
        }));
        // SAFETY: the GIL is held; `loop_type` is a live type object and
        // `def` lives forever; a NULL result has an exception set.
        let descr = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyDescr_NewMethod(loop_type.as_ptr().cast(), def),
            )?
        };
        let name = name
            .to_str()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        loop_type.setattr(name, descr)?;
    }
    Ok(())
}
