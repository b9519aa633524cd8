//! Python objects the native code calls on hot or error paths, looked up
//! once per interpreter: asyncio's C `Future`/`Task` types, the helpers in
//! `tokioloop._native_support`, and interned keyword-name tuples for
//! vectorcall. Keeping them here means every other module reaches Python
//! through one cached, typed table instead of ad-hoc imports.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

pub struct PyRefs {
    pub future_type: Py<PyAny>,
    pub task_type: Py<PyAny>,
    /// `asyncio.BaseEventLoop.create_task`: the full Python path, used when a
    /// task factory is set or in debug mode.
    pub base_create_task: Py<PyAny>,
    pub report_callback_error: Py<PyAny>,
    pub handle_repr: Py<PyAny>,
    pub extract_stack: Py<PyAny>,
    pub run_handle_debug: Py<PyAny>,
    /// `asyncio.BufferedProtocol`: transports read into `get_buffer()` for it.
    pub buffered_protocol_type: Py<PyAny>,
    /// `asyncio.log.logger`, for the warnings asyncio's transports log.
    pub asyncio_logger: Py<PyAny>,
    /// `socket.socket`: exact instances take the native `sock_*` path.
    pub socket_type: Py<PyAny>,
    /// `_socket.socket`, the C type `socket.socket` derives from.
    pub socket_base_type: Py<PyAny>,
    /// `_socket.socket.close`: a plain socket closed without
    /// `socket.socket.close()`'s two frames (`stream_owner`).
    pub socket_base_close: Py<PyAny>,
    /// `object.__new__` and `asyncio.trsock.TransportSocket`: the extra
    /// info's socket made without its `__init__` frame.
    pub object_new: Py<PyAny>,
    pub transport_socket_type: Py<PyAny>,
    /// `asyncio.base_events._set_nodelay`, for sockets not read natively.
    pub set_nodelay: Py<PyAny>,
    /// asyncio's `futures._set_result_unless_cancelled`, natively
    /// (`transport_support`): a transport's waiter.
    pub set_result_unless_cancelled: Py<PyAny>,
    /// 3.13+: `Server._attach`/`_detach` take the transport.
    pub server_tracks_transports: bool,
    /// `weakref.WeakValueDictionary`, the type of `loop._transports`.
    pub weak_value_dict_type: Py<PyAny>,
    pub kw_loop_name: Py<PyTuple>,
    pub kw_loop_context: Py<PyTuple>,
    pub kw_loop_name_context: Py<PyTuple>,
    /// `Task(context=...)` exists from Python 3.11 on.
    pub task_takes_context: bool,
    /// `Future()`/`Task(coro)` find the running loop without a syscall (on
    /// 3.10/3.11 asyncio's C lookup calls getpid() every time).
    pub running_loop_lookup_is_free: bool,
    /// 3.12+: the stream transport's own `writelines` checks `write_eof`
    /// and sendfile before it reads the list (earlier, `join` then `write`).
    pub writelines_checks_first: bool,
}

static REFS: PyOnceLock<PyRefs> = PyOnceLock::new();

pub fn refs(py: Python<'_>) -> &PyRefs {
    REFS.get_or_init(py, || {
        load(py).expect("tokioloop: cannot import its Python helpers")
    })
}

fn load(py: Python<'_>) -> PyResult<PyRefs> {
    let asyncio = py.import("asyncio")?;
    let support = py.import("tokioloop._native_support")?;
    let socket_type = py.import("socket")?.getattr("socket")?;
    let names = |items: &[&str]| -> PyResult<Py<PyTuple>> { Ok(PyTuple::new(py, items)?.unbind()) };
    Ok(PyRefs {
        future_type: asyncio.getattr("Future")?.unbind(),
        task_type: asyncio.getattr("Task")?.unbind(),
        base_create_task: asyncio
            .getattr("BaseEventLoop")?
            .getattr("create_task")?
            .unbind(),
        report_callback_error: support.getattr("report_callback_error")?.unbind(),
        handle_repr: support.getattr("handle_repr")?.unbind(),
        extract_stack: support.getattr("extract_stack")?.unbind(),
        run_handle_debug: support.getattr("run_handle_debug")?.unbind(),
        buffered_protocol_type: asyncio.getattr("BufferedProtocol")?.unbind(),
        asyncio_logger: py.import("asyncio.log")?.getattr("logger")?.unbind(),
        socket_type: socket_type.clone().unbind(),
        socket_base_type: py.import("_socket")?.getattr("socket")?.unbind(),
        socket_base_close: py
            .import("_socket")?
            .getattr("socket")?
            .getattr("close")?
            .unbind(),
        object_new: py
            .import("builtins")?
            .getattr("object")?
            .getattr("__new__")?
            .unbind(),
        transport_socket_type: py
            .import("asyncio.trsock")?
            .getattr("TransportSocket")?
            .unbind(),
        set_nodelay: py
            .import("asyncio.base_events")?
            .getattr("_set_nodelay")?
            .unbind(),
        set_result_unless_cancelled: wrap_pyfunction!(
            crate::transport_support::_set_result_unless_cancelled,
            py
        )?
        .into_any()
        .unbind(),
        server_tracks_transports: py.version_info() >= (3, 13),
        weak_value_dict_type: py
            .import("weakref")?
            .getattr("WeakValueDictionary")?
            .unbind(),
        kw_loop_name: names(&["loop", "name"])?,
        kw_loop_context: names(&["loop", "context"])?,
        kw_loop_name_context: names(&["loop", "name", "context"])?,
        task_takes_context: py.version_info() >= (3, 11),
        running_loop_lookup_is_free: py.version_info() >= (3, 12),
        writelines_checks_first: py.version_info() >= (3, 12),
    })
}

/// `callable(*args, **dict(zip(kwnames, kwargs)))` through vectorcall, with no
/// tuple or dict built on our side.
pub fn vectorcall<'py>(
    py: Python<'py>,
    callable: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    kwargs: &[&Bound<'py, PyAny>],
    kwnames: Option<&Bound<'py, PyTuple>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut ptrs: [*mut pyo3::ffi::PyObject; 8] = [std::ptr::null_mut(); 8];
    let total = args.len() + kwargs.len();
    assert!(total < ptrs.len(), "vectorcall: too many arguments");
    for (slot, obj) in ptrs[1..].iter_mut().zip(args.iter().chain(kwargs.iter())) {
        *slot = obj.as_ptr();
    }
    let kw = kwnames.map_or(std::ptr::null_mut(), |k| k.as_ptr());
    // SAFETY: `ptrs[1..=total]` hold borrowed, live object pointers; slot 0 is
    // scratch space that PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee use;
    // the result is a new reference or NULL with an exception set.
    unsafe {
        let result = pyo3::ffi::PyObject_Vectorcall(
            callable.as_ptr(),
            ptrs.as_ptr().add(1),
            args.len() | pyo3::ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
            kw,
        );
        Bound::from_owned_ptr_or_err(py, result)
    }
}
