//! `create_connection` to a numeric host (no TLS, no `sock=`), from the new
//! socket to the `(transport, protocol)` it returns, with no Python frame
//! in between: what `Loop._connect_numeric` does, itself asyncio's
//! `create_connection`, `sock_connect` and `_create_connection_transport`
//! for one resolved address.
//!
//! `Loop.create_connection` calls [`start`], which makes the non-blocking
//! socket and starts the connect, and awaits the one future of the
//! returned [`ConnectOp`]. A connect in progress waits as `sock_connect`
//! does (a `SockOp` on the socket's `SockWatch`, see `sock_ops`), but its
//! outcome comes to [`ConnectOp::connected`] instead of a future. That
//! makes the protocol and the transport as asyncio does inside the task:
//! in the task's context, with the task as `current_task()`. The transport
//! then schedules `connection_made` and the future's result, as it would
//! schedule the waiter's.
//!
//! Against the Python coroutines this replaces, a connection costs two
//! coroutine frames, two futures (the connect's and the waiter) and one
//! wake-up of the task less (`benches/churn.py --client`).
//!
//! Failures are asyncio's: the `OSError` of the socket or the connect (the
//! socket closed first), wrapped in an `ExceptionGroup` with
//! `all_errors=True`; an error from the protocol factory or the transport
//! as it is, with the socket left to the GC as asyncio leaves it.
//! Cancellation: the coroutine catches `CancelledError` and calls
//! [`ConnectOp::cancel`], which stops the wait and closes the socket while
//! connecting, or closes the transport once made (asyncio's `except:
//! transport.close()` around its wait for the waiter).

use std::io;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::sync::PyOnceLock;

use crate::errors::os_error;
use crate::gil_cell::GilCell;
use crate::inet_address::SocketNames;
use crate::loop_core::LoopCore;
use crate::sock_ops::{self, Outcome, SockCall};
use crate::socket_fields;
use crate::transport_support::{in_context, is_fatal};

/// Where a connection is.
enum State {
    /// The connect is in progress on this socket.
    Connecting { sock: Py<PyAny> },
    /// The transport is made; the future's result is scheduled.
    Made { transport: Py<PyAny> },
    /// Failed, cancelled or handed over: nothing left to clean up.
    Done,
}

/// One `create_connection` in progress.
#[pyclass(frozen, module = "tokioloop._tokioloop", name = "ConnectOp")]
pub struct ConnectOp {
    loop_: Py<LoopCore>,
    /// Resolves to `(transport, protocol)`.
    future: Py<PyAny>,
    protocol_factory: Py<PyAny>,
    /// The calling task's context, and the task (None outside a task).
    context: Py<PyAny>,
    task: Py<PyAny>,
    all_errors: bool,
    state: GilCell<State>,
}

/// `loop._connect_start(protocol_factory, family, kind, proto, address,
/// all_errors)`: the socket (`SOCK_NONBLOCK` added to `kind`) and the
/// connect; the `ConnectOp` whose `future` to await. Errors found at once
/// are raised here.
pub fn start<'py>(
    loop_: &Bound<'py, LoopCore>,
    protocol_factory: &Bound<'py, PyAny>,
    (family, kind, proto): (i32, i32, i32),
    address: &Bound<'py, PyAny>,
    all_errors: bool,
) -> PyResult<Bound<'py, ConnectOp>> {
    let py = loop_.py();
    let sock =
        crate::socket_object::new_socket(py, family, kind | libc::SOCK_NONBLOCK, proto, None)
            .map_err(|err| grouped(py, err, all_errors))?;
    let (context, task) = calling_task(loop_)?;
    let op = Bound::new(
        py,
        ConnectOp {
            loop_: loop_.clone().unbind(),
            future: LoopCore::create_future(loop_)?.unbind(),
            protocol_factory: protocol_factory.clone().unbind(),
            context,
            task,
            all_errors,
            state: GilCell::new(State::Connecting {
                sock: sock.clone().unbind(),
            }),
        },
    )?;
    let pending = match connect(&sock, address) {
        Ok(pending) => pending,
        Err(err) => {
            op.get().take_state(py);
            sock.call_method0(intern!(py, "close"))?;
            return Err(grouped(py, err, all_errors));
        }
    };
    if pending {
        let fd = socket_fields::of(&sock)?.fd;
        let call = SockCall::Connect {
            address: address.clone().unbind(),
        };
        let future = op.get().future.bind(py).clone();
        let then = Some(op.clone().unbind());
        if let Err(err) = sock_ops::register(loop_, &sock, fd, call, false, &future, then) {
            op.get().take_state(py);
            sock.call_method0(intern!(py, "close"))?;
            return Err(err);
        }
    } else {
        // Connected at once: still inside the calling task.
        ConnectOp::finish(&op, Outcome::Done(py.None()), false)?;
    }
    Ok(op)
}

/// `sock.connect_ex(address)`: whether the connect is in progress
/// (asyncio's `BlockingIOError`/`InterruptedError` cases), or its error.
fn connect(sock: &Bound<'_, PyAny>, address: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = sock.py();
    let err: i32 = sock
        .call_method1(intern!(py, "connect_ex"), (address,))?
        .extract()?;
    match err {
        0 => Ok(false),
        libc::EAGAIN | libc::EALREADY | libc::EINPROGRESS | libc::EINTR => Ok(true),
        _ => Err(os_error(io::Error::from_raw_os_error(err))),
    }
}

/// `err`, or, for an `OSError` with `all_errors`, asyncio's
/// `ExceptionGroup("create_connection failed", [err])` (asyncio collects
/// only the `OSError`s of its connect attempts; anything else propagates).
fn grouped(py: Python<'_>, err: PyErr, all_errors: bool) -> PyErr {
    if !all_errors || !err.is_instance_of::<pyo3::exceptions::PyOSError>(py) {
        return err;
    }
    let group = py
        .import(intern!(py, "builtins"))
        .and_then(|b| b.getattr(intern!(py, "ExceptionGroup")))
        .and_then(|g| g.call1(("create_connection failed", vec![err.into_value(py)])));
    match group {
        Ok(group) => PyErr::from_value(group),
        Err(err) => err,
    }
}

/// The current context (the object itself, as the task runs in it) and
/// `asyncio.current_task(loop)`.
fn calling_task<'py>(loop_: &Bound<'py, LoopCore>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let py = loop_.py();
    let current = crate::thread_context::context_offset(py).and_then(|offset| {
        // SAFETY: the GIL is held; the offset was checked for this
        // interpreter. The pointer is borrowed, NULL if never set.
        let ptr = unsafe { crate::thread_context::current_at(offset) };
        // SAFETY: a live context object, borrowed from the thread state.
        unsafe { Bound::from_borrowed_ptr_or_opt(py, ptr) }
    });
    let context = match current {
        Some(context) => context,
        // SAFETY: the GIL is held; a new reference or NULL with an error.
        None => unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())? },
    };
    let task = task_functions(py)?.0.bind(py).call1((loop_,))?;
    Ok((context.unbind(), task.unbind()))
}

/// `current_task(loop)`, `_enter_task` and `_leave_task`, the C versions
/// where there are: `asyncio.current_task` is Python up to 3.13, and
/// before 3.12 only the table it reads is C (`_current_tasks`).
fn task_functions(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    static FUNCTIONS: PyOnceLock<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    FUNCTIONS.get_or_try_init(py, || {
        let tasks = py.import("asyncio.tasks")?;
        let c_current = py
            .import("_asyncio")
            .and_then(|m| m.getattr("current_task"))
            .ok();
        let current = match c_current {
            Some(current) => current,
            None => tasks.getattr("_current_tasks")?.getattr("get")?,
        };
        Ok::<_, PyErr>((
            current.unbind(),
            tasks.getattr("_enter_task")?.unbind(),
            tasks.getattr("_leave_task")?.unbind(),
        ))
    })
}

impl ConnectOp {
    fn take_state(&self, py: Python<'_>) -> State {
        std::mem::replace(&mut *self.state.borrow_mut(py), State::Done)
    }

    fn set_state(&self, py: Python<'_>, state: State) {
        let old = std::mem::replace(&mut *self.state.borrow_mut(py), state);
        drop(old); // after the borrow
    }

    /// The connect's outcome (from its `SockOp`, or at once): the protocol
    /// and transport, or the error on the future. Only `KeyboardInterrupt`
    /// and `SystemExit` escape, to stop the loop.
    pub fn connected(slf: &Bound<'_, Self>, outcome: Outcome) -> PyResult<()> {
        Self::finish(slf, outcome, true)
    }

    /// `connected`, from the loop (`enter_task`: the transport is made as
    /// the task would make it) or from inside the task itself.
    fn finish(slf: &Bound<'_, Self>, outcome: Outcome, enter_task: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let State::Connecting { sock } = this.take_state(py) else {
            return Ok(());
        };
        let sock = sock.into_bound(py);
        let future = this.future.bind(py);
        let made = match outcome {
            Outcome::Retry => {
                this.set_state(
                    py,
                    State::Connecting {
                        sock: sock.unbind(),
                    },
                );
                return Ok(());
            }
            Outcome::Failed(err) => {
                if is_fatal(py, &err) {
                    return Err(err);
                }
                sock.call_method0(intern!(py, "close"))?;
                Err(grouped(py, err, this.all_errors))
            }
            Outcome::Done(_) if enter_task => in_task(slf, || this.make_transport(&sock)),
            Outcome::Done(_) => this.make_transport(&sock),
        };
        match made {
            Ok(transport) => this.set_state(py, State::Made { transport }),
            Err(err) if is_fatal(py, &err) => return Err(err),
            Err(err) => {
                if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
                    future.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
                }
            }
        }
        Ok(())
    }

    /// asyncio's `_create_connection_transport` for a plain socket: the
    /// protocol, then the transport, which resolves the future.
    fn make_transport(&self, sock: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = sock.py();
        let protocol = self.protocol_factory.bind(py).call0()?;
        let fd = socket_fields::of(sock)?.fd;
        let names = Bound::new(py, SocketNames::of(fd, None))?;
        let none = py.None().into_bound(py);
        let transport = crate::stream_owner::new_socket_transport(
            self.loop_.bind(py),
            sock,
            &protocol,
            self.future.bind(py),
            names.as_any(),
            &none,
            true,
        )?;
        Ok(transport.unbind())
    }
}

/// Run `f` as the calling task's step would: in its context, with the
/// task current. A context entered elsewhere right now (shared with a
/// running task) is copied instead.
fn in_task<T>(slf: &Bound<'_, ConnectOp>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let py = slf.py();
    let this = slf.get();
    let (_, enter, leave) = task_functions(py)?;
    let task = this.task.bind(py);
    let loop_ = this.loop_.bind(py);
    let with_task = || {
        if task.is_none() {
            return f();
        }
        enter.bind(py).call1((loop_, task))?;
        let result = f();
        leave.bind(py).call1((loop_, task))?;
        result
    };
    // SAFETY: the GIL is held and the context is a live Context object.
    if unsafe { pyo3::ffi::PyContext_Enter(this.context.as_ptr()) } != 0 {
        PyErr::take(py);
        // SAFETY: as above; a new reference or NULL with an error set.
        let copy = unsafe {
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_Copy(this.context.as_ptr()))?
        };
        return in_context(py, &copy.unbind(), with_task);
    }
    let result = with_task();
    // SAFETY: exits the context entered above, on this thread.
    if unsafe { pyo3::ffi::PyContext_Exit(this.context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

#[pymethods]
impl ConnectOp {
    /// The future `create_connection` awaits.
    #[getter]
    fn future(&self, py: Python<'_>) -> Py<PyAny> {
        self.future.clone_ref(py)
    }

    /// The awaiting task was cancelled: stop the connect and close the
    /// socket, or close the transport made meanwhile.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        match this.take_state(py) {
            State::Connecting { sock } => {
                LoopCore::cancel_sock_wait(this.loop_.bind(py), this.future.bind(py))?;
                sock.bind(py).call_method0(intern!(py, "close"))?;
            }
            State::Made { transport } => {
                transport.bind(py).call_method0(intern!(py, "close"))?;
            }
            State::Done => {}
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        visit.call(&self.future)?;
        visit.call(&self.protocol_factory)?;
        visit.call(&self.context)?;
        visit.call(&self.task)?;
        // SAFETY: the GC calls tp_traverse with the GIL held.
        let py = unsafe { Python::assume_attached() };
        if let Some(state) = self.state.try_borrow_mut(py) {
            match &*state {
                State::Connecting { sock } => visit.call(sock)?,
                State::Made { transport } => visit.call(transport)?,
                State::Done => {}
            }
        }
        Ok(())
    }
}
