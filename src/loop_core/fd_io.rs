//! The loop's fd side, all in its own epoll instance (`loop_poll`):
//! `add_reader`/`add_writer` callbacks (`fd_watch`), native I/O objects
//! (transports, by token), and the registrations `sock_*` calls keep across
//! waits (`sock_watch`), including how a socket's waiting calls move when a
//! callback or a transport takes its fd over. Events arrive here
//! (`queue_polled`, from the epoll instance; `dispatch_fd_events`, native
//! objects' requests to run again) and leave as entries of the ready
//! queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple};

use super::{LoopCore, Ready};
use crate::errors::os_error;
use crate::fd_watch::{Direction, EventSink, FdEvent, Removed};
use crate::handles::{Args, Handle};
use crate::loop_poll::{self, NativeEdge, Polled};
use crate::native_io::{IoRegistration, NativeEntry, NativeIo};
use crate::sock_ops::{self, Registered};
use crate::sock_watch::SockWatch;

impl LoopCore {
    /// Handle the events of a `wait` on the loop's epoll instance: the
    /// native objects an edge concerns go on the ready queue (through
    /// their readiness state, see `native_io`), with one lock of the
    /// registry for the batch. With the GIL held: the state is also read
    /// and written by I/O attempts, which hold it.
    ///
    /// A transport's edge runs ahead of the callbacks already queued,
    /// as libuv runs I/O callbacks in its poll phase, before the callbacks
    /// the last iteration scheduled: a task woken by a response that was
    /// just sent then finds the peer's next request already received
    /// (aiohttp's request loop waits on a future otherwise, and 9 in 10
    /// requests skip that wait on uvloop). Not in a run's first poll or a
    /// park (`transports_first` false): callbacks queued before the run
    /// come first, as on uvloop (which runs them before its first poll)
    /// and the stock loop. Any order of I/O against `call_soon` callbacks
    /// is asyncio's contract; the stock loop queues I/O last, and so do
    /// `add_reader`/`add_writer` callbacks and the waits of `sock_*` calls
    /// here (asyncio builds those on its selector, and code that mixes
    /// them with callbacks may count on its order).
    ///
    /// A watched fd's callbacks are queued as a selector loop's are; the
    /// next iteration polls again (`Polled::watched`, `LoopCore::rechecks`),
    /// so that a callback that leaves its fd ready runs again in the next
    /// iteration, as there.
    pub(super) fn queue_polled(
        &self,
        py: Python<'_>,
        events: &[libc::epoll_event],
        transports_first: bool,
    ) -> Polled {
        let mut natives = None;
        let mut watchers = None;
        let mut ready = None;
        let mut cancelled = Vec::new();
        let mut watched = 0;
        // Transports' entries go ahead of the callbacks already queued (see
        // the doc above); the rest after them, as asyncio's.
        let mut queued_transports = 0;
        // Nothing below runs Python code, so the borrow can stay open.
        let mut queued_last = self.poll_tail.borrow_mut(py);
        let mut polled = self.poller.decode(events, &self.shared.wakeup, |edge| {
            let ready = ready.get_or_insert_with(|| self.shared.ready.borrow_mut(py));
            if let NativeEdge::Watch { fd, token, mask } = edge {
                let watchers = watchers.get_or_insert_with(|| self.watchers.lock());
                let fired = watchers.fired(fd, token, mask);
                let mut queued = false;
                for h in fired.run.into_iter().flatten() {
                    queued_last.push(Ready::Native(h.clone_ref(py)));
                    queued = true;
                }
                watched += u32::from(queued);
                cancelled.extend(fired.cancelled.into_iter().flatten().map(|d| (fd, d)));
                return;
            }
            let natives = natives.get_or_insert_with(|| self.natives.lock());
            match edge {
                NativeEdge::Watch { .. } => {}
                NativeEdge::Io { token, mask } => {
                    if let Some(NativeEntry {
                        io,
                        state: Some(state),
                    }) = natives.get(&token)
                    {
                        state.on_edge(mask, |d| {
                            ready.push_back(Ready::Io(io.clone_ref(py), d));
                            queued_transports += 1;
                        });
                    }
                }
                NativeEdge::Sock { token, mask } => {
                    // A socket's kept registration: only a waiting call
                    // wants the edge (see `LoopPoller::add_sock`).
                    if let Some(NativeEntry {
                        io: NativeIo::Sock(watch),
                        ..
                    }) = natives.get(&token)
                    {
                        for d in loop_poll::sock_directions(mask) {
                            if watch.get().waits_for(d) {
                                let target = NativeIo::Sock(watch.clone_ref(py));
                                queued_last.push(Ready::Io(target, d));
                            }
                        }
                    }
                }
            }
        });
        if let Some(ready) = ready.as_mut() {
            if transports_first {
                ready.rotate_right(queued_transports);
            }
            if !queued_last.is_empty() {
                ready.extend(queued_last.drain(..));
            }
        }
        drop((natives, watchers, ready, queued_last));
        if !cancelled.is_empty() {
            // asyncio's `_process_events` removes a cancelled callback it
            // meets (level-triggered, it would be reported again and again).
            for (fd, direction) in cancelled {
                drop(self.remove_watches([(fd, direction)]));
            }
        }
        polled.watched = watched;
        polled
    }

    /// Queue the native objects that asked to run again (see
    /// `native_io::IoRegistration::requeue`). `events` is the caller's
    /// buffer, reused so that neither it nor the shared list is
    /// reallocated per iteration.
    pub(super) fn dispatch_fd_events(&self, py: Python<'_>, events: &mut Vec<FdEvent>) {
        // Events are pushed by native objects on this thread, so the hint
        // is exact here.
        if self.shared.fd_events.len_hint() == 0 {
            return;
        }
        events.extend(self.shared.fd_events.lock().drain(..));
        let natives = self.natives.lock();
        let mut ready = self.shared.ready.borrow_mut(py);
        for e in events.drain(..) {
            if let Some(entry) = natives.get(&e.token) {
                ready.push_back(Ready::Io(entry.io.clone_ref(py), e.direction));
            } // else released since
        }
    }

    /// Put a native I/O object's fd on the reactor; events for it reach
    /// `StreamTransport::on_ready` through the ready queue.
    pub(crate) fn register_native(
        &self,
        py: Python<'_>,
        fd: i32,
        target: NativeIo,
    ) -> PyResult<(u64, IoRegistration)> {
        self.check_open()?;
        // A transport takes over the fd: calls waiting through the socket's
        // watch are dropped, as asyncio's transport replaces their reader,
        // and so are callbacks (they share the epoll instance).
        let in_poller = self.release_sock_watch(py, fd);
        self.release_fd_watchers(py, fd)?;
        let token = self.next_native.fetch_add(1, Ordering::Relaxed);
        let sink: std::sync::Weak<dyn EventSink> = Arc::downgrade(&self.shared) as _;
        let registration =
            IoRegistration::new(&self.poller, fd, token, sink, in_poller).map_err(os_error)?;
        self.shared.note_registration();
        let entry = NativeEntry {
            io: target,
            state: Some(registration.state()),
        };
        let mut natives = self.natives.lock();
        natives.insert(token, entry);
        self.native_ios.store(natives.len(), Ordering::Relaxed);
        Ok((token, registration))
    }

    /// Cancel and remove `fd`'s `add_reader`/`add_writer` callbacks, if any.
    fn release_fd_watchers(&self, py: Python<'_>, fd: i32) -> PyResult<()> {
        for r in self.remove_watches([(fd, Direction::Read), (fd, Direction::Write)]) {
            r.cancel(py)?;
        }
        Ok(())
    }

    /// Remove these `fd_watch` callbacks under one lock of the registry
    /// (with its fd count republished). What was removed is returned, for
    /// the caller to cancel or drop once the lock is released (either may
    /// run Python code).
    fn remove_watches<const N: usize>(&self, which: [(i32, Direction); N]) -> [Removed; N] {
        let mut watchers = self.watchers.lock();
        let removed = which.map(|(fd, direction)| watchers.remove(&self.poller, fd, direction));
        self.watched_fds.store(watchers.len(), Ordering::Relaxed);
        removed
    }

    /// `remove_reader`/`remove_writer` by fd number: an `fd_watch` callback,
    /// or a `sock_*` call waiting in the fd's watch.
    pub(super) fn remove_fd(
        slf: &Bound<'_, Self>,
        fd: i32,
        direction: Direction,
    ) -> PyResult<bool> {
        if Self::remove_fd_native(slf, fd, direction)? {
            return Ok(true);
        }
        // A `sock_*` call waiting through the socket's watch is this fd's
        // reader/writer for asyncio: removing it leaves its future pending,
        // as there.
        let this = slf.get();
        Ok(!this.shared.closed.load(Ordering::Relaxed)
            && this.drop_watch_op(slf.py(), fd, direction, None))
    }

    /// Remove the `fd_watch` callback of `fd` for `direction` (native
    /// callers: a `SockOp` waiting through `fd_watch` removes itself).
    pub(crate) fn remove_fd_native(
        slf: &Bound<'_, Self>,
        fd: i32,
        direction: Direction,
    ) -> PyResult<bool> {
        let this = slf.get();
        if this.shared.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let [removed] = this.remove_watches([(fd, direction)]);
        removed.cancel(slf.py())
    }

    /// Take the call waiting in `fd`'s watch for `direction` (only if it is
    /// `op`, when given); the watch stays registered.
    pub(super) fn drop_watch_op(
        &self,
        py: Python<'_>,
        fd: i32,
        direction: Direction,
        op: Option<&Py<sock_ops::SockOp>>,
    ) -> bool {
        let watch = self.sock_watches.lock().get(&fd).map(|w| w.clone_ref(py));
        let Some(taken) = watch.and_then(|w| w.get().take_op(direction, op)) else {
            return false;
        };
        taken.get().forget_wait(py);
        true
    }

    /// The registration kept for `sock` across `sock_*` waits, made if
    /// needed; `None` when the fd must wait through `fd_watch` (already
    /// watched there, or the registration failed: `fd_watch` then raises
    /// what it always raised).
    pub(crate) fn sock_watch(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        fd: i32,
    ) -> PyResult<Option<Py<SockWatch>>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        if this.watchers.lock().get(fd).is_some() {
            return Ok(None);
        }
        let stale = match this.sock_watches.lock().get(&fd) {
            Some(w) if w.get().is_for(py, sock, fd) => return Ok(Some(w.clone_ref(py))),
            Some(_) => true,
            None => false,
        };
        if stale {
            // Another socket object had this fd number (closed, or the same
            // file wrapped again): off the reactor before anything new goes
            // on. Its waiting calls go to fd_watch, where asyncio's would be,
            // if that object still has the fd; otherwise they are dropped.
            Self::hand_over_sock_watch(slf, fd)?;
            if this.watchers.lock().get(fd).is_some() {
                return Ok(None);
            }
        }
        let token = this.next_native.fetch_add(1, Ordering::Relaxed);
        let watch = Py::new(py, SockWatch::new(sock, fd, token)?)?;
        if this.add_to_poller(fd, token).is_err() {
            return Ok(None);
        }
        {
            let mut natives = this.natives.lock();
            let entry = NativeEntry {
                io: NativeIo::Sock(watch.clone_ref(py)),
                state: None,
            };
            natives.insert(token, entry);
            this.native_ios.store(natives.len(), Ordering::Relaxed);
        }
        this.sock_watches.lock().insert(fd, watch.clone_ref(py));
        Ok(Some(watch))
    }

    /// Run the waiting call of `fd`'s watch for `direction` if the fd is
    /// ready then. asyncio's call registers a reader or writer, which fires
    /// with the next poll's events (after everything the running iteration
    /// queues) if the fd is ready; a kept watch hears only of changes, so
    /// `queue_sock_retries` looks, once the iteration's callbacks are done.
    pub(crate) fn retry_sock_watch(&self, py: Python<'_>, fd: i32, direction: Direction) {
        self.sock_retries.borrow_mut(py).push((fd, direction));
    }

    /// Queue the retries `retry_sock_watch` noted whose fd is ready for
    /// their direction now (as a level-triggered poll would report it) and
    /// whose call still waits. One that is not ready waits for the edge its
    /// short send arranged (the kernel wakes a writer that found no space).
    pub(super) fn queue_sock_retries(&self, py: Python<'_>) {
        // Runs after every iteration: the common empty case costs the
        // GilCell's borrow flag (set and cleared) and a length check, with
        // no lock or atomic.
        let retries = {
            let mut noted = self.sock_retries.borrow_mut(py);
            if noted.is_empty() {
                return;
            }
            std::mem::take(&mut *noted)
        };
        for (fd, direction) in retries {
            let events = match direction {
                Direction::Read => libc::POLLIN,
                Direction::Write => libc::POLLOUT,
            };
            let mut pollfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no timeout; a closed fd is reported
            // in `revents` (POLLNVAL), which counts as ready below.
            if unsafe { libc::poll(&mut pollfd, 1, 0) } == 0 {
                continue;
            }
            let watch = self.sock_watches.lock().get(&fd).map(|w| w.clone_ref(py));
            if let Some(watch) = watch.filter(|w| w.get().waits_for(direction)) {
                self.shared
                    .push_ready(py, Ready::Io(NativeIo::Sock(watch), direction));
            }
        }
    }

    /// Register `fd` in the loop's epoll instance as the socket watch
    /// `token`.
    pub(super) fn add_to_poller(&self, fd: i32, token: u64) -> std::io::Result<()> {
        self.shared.note_registration();
        self.poller.add_sock(fd, token)
    }

    /// Release `fd`'s watch (if there is one): its waiting calls, still in
    /// the waits table, and whether its socket is still open on that fd;
    /// None if it had none. The fd comes off the poller, unless
    /// `keep_in_poller`: then it stays in the epoll instance (under the
    /// watch's key, which nobody owns any more) for the caller to re-key.
    pub(super) fn take_sock_watch(
        &self,
        py: Python<'_>,
        fd: i32,
        keep_in_poller: bool,
    ) -> Option<(Vec<Py<sock_ops::SockOp>>, bool)> {
        if self.native_ios.load(Ordering::Relaxed) == 0 {
            return None; // no watch at all: the common case
        }
        let watch = self.sock_watches.lock().remove(&fd)?;
        let registered = self.unregister_native(watch.get().token);
        let ops = watch.get().release();
        if !keep_in_poller {
            // Fails harmlessly if the socket was closed (see `add_sock`).
            self.poller.remove(fd);
        }
        drop(registered);
        let open = watch.get().socket_still_open(py);
        drop(watch);
        Some((ops.into_iter().flatten().collect(), open))
    }

    /// For a transport taking over `fd`: its watch released, waiting calls
    /// dropped (their futures stay pending, as with asyncio). Whether the
    /// fd was left in the epoll instance for the transport to re-key (one
    /// `EPOLL_CTL_MOD` instead of a removal and an addition: a socket that
    /// `sock_connect` connected, made into a transport).
    pub(super) fn release_sock_watch(&self, py: Python<'_>, fd: i32) -> bool {
        let Some((ops, _)) = self.take_sock_watch(py, fd, true) else {
            return false;
        };
        for op in ops {
            op.get().forget_wait(py);
        }
        true
    }

    /// For `add_reader`/`add_writer` on `fd`: its watch released, waiting
    /// calls moved to `fd_watch` callbacks, where asyncio keeps them (and
    /// where the new callback then replaces one of the same direction), or
    /// dropped if their socket no longer has this fd.
    pub(super) fn hand_over_sock_watch(slf: &Bound<'_, Self>, fd: i32) -> PyResult<()> {
        let py = slf.py();
        let Some((ops, open)) = slf.get().take_sock_watch(py, fd, false) else {
            return Ok(());
        };
        for op in ops {
            let sock_op = op.get();
            if !open || sock_op.future_done(py)? {
                sock_op.forget_wait(py);
                continue;
            }
            let direction = sock_op.direction();
            let future = sock_op.future().clone_ref(py);
            let handle = Self::watch_sock_op(slf, fd, op.into_any(), direction)?;
            let old = slf
                .get()
                .sock_waits
                .lock()
                .moved_to_handle(future.bind(py), handle);
            drop(old);
        }
        Ok(())
    }

    /// Watch `fd` through `fd_watch` with a native `SockOp` (the callback)
    /// for a waiting `sock_*` call; returns the handle registered.
    pub(crate) fn watch_sock_op(
        slf: &Bound<'_, Self>,
        fd: i32,
        op: Py<PyAny>,
        direction: Direction,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let fd_obj = fd.into_pyobject(py)?;
        Self::add_fd_callback(
            slf,
            fd_obj.as_any(),
            direction,
            op.into_bound(py),
            PyTuple::empty(py),
        )
    }

    pub(crate) fn unregister_native(&self, token: u64) -> Option<NativeEntry> {
        let mut natives = self.natives.lock();
        let removed = natives.remove(&token);
        self.native_ios.store(natives.len(), Ordering::Relaxed);
        removed
    }

    /// A watched fd's callback found its fd drained (see `rechecks`): one
    /// fewer reason for the next iteration to poll.
    pub(super) fn report_drained(&self) {
        // Never below zero: a poll in between may have reset the count.
        let _ = self
            .rechecks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether the last poll's watched fds may still be ready (see
    /// `rechecks`); takes the count.
    pub(super) fn take_rechecks(&self) -> bool {
        self.rechecks.swap(0, Ordering::Relaxed) > 0
    }

    /// Whether any fd is watched, by callbacks or native objects.
    pub(super) fn has_io_sources(&self) -> bool {
        self.watched_fds.load(Ordering::Relaxed) + self.native_ios.load(Ordering::Relaxed) > 0
    }

    pub(super) fn add_fd_callback(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        direction: Direction,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        let fileobj = (!fd.is_instance_of::<PyInt>()).then(|| fd.clone().unbind());
        let fd = fileobj_to_fd(fd)?;
        // A socket's watch kept across sock_* waits goes first (before the
        // new registration; see `sock_watch`).
        Self::hand_over_sock_watch(slf, fd)?;
        let args = Args::tuple(args.unbind());
        let handle = Py::new(
            py,
            Self::new_handle(slf, callback, args, None, Handle::new)?,
        )?;
        let replaced = {
            let mut watchers = this.watchers.lock();
            let replaced = watchers
                .add(&this.poller, fd, direction, handle.clone_ref(py), fileobj)
                .map_err(os_error)?;
            this.watched_fds.store(watchers.len(), Ordering::Relaxed);
            replaced
        };
        this.shared.note_registration();
        if let Some(old) = replaced {
            old.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(handle)
    }

    pub(super) fn remove_fd_callback(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        direction: Direction,
    ) -> PyResult<bool> {
        let this = slf.get();
        if this.shared.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        Self::remove_fd(slf, this._watched_fd(fd)?, direction)
    }

    /// The task awaiting a `sock_*` future was cancelled: stop watching the
    /// fd if this call's callback is still the one registered there.
    pub(crate) fn cancel_sock_wait(
        slf: &Bound<'_, Self>,
        future: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let Some(wait) = this.sock_waits.lock().remove(future) else {
            return Ok(false);
        };
        let handle = match &wait.registered {
            Registered::Watch(op) => {
                let dropped = this.drop_watch_op(py, wait.fd, wait.direction, Some(op));
                drop(wait);
                return Ok(dropped);
            }
            Registered::Handle(handle) => handle,
        };
        let removed = {
            let mut watchers = this.watchers.lock();
            let ours = watchers.get(wait.fd).is_some_and(|(reader, writer)| {
                let current = match wait.direction {
                    Direction::Read => reader,
                    Direction::Write => writer,
                };
                current.is_some_and(|h| h.is(handle))
            });
            let removed = if ours {
                watchers.remove(&this.poller, wait.fd, wait.direction)
            } else {
                Removed::default()
            };
            this.watched_fds.store(watchers.len(), Ordering::Relaxed);
            removed
        };
        drop(wait);
        removed.cancel(py)
    }
}

/// `selectors._fileobj_to_fd`: an int, or an object with `fileno()`.
pub(super) fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let fd: i64 = match obj.extract::<i64>() {
        Ok(fd) => fd,
        Err(_) => obj
            .call_method0("fileno")
            .and_then(|f| f.extract::<i64>())
            .map_err(|_| {
                let shown = obj.repr().map(|r| r.to_string()).unwrap_or_default();
                pyo3::exceptions::PyValueError::new_err(format!("Invalid file object: {shown}"))
            })?,
    };
    if fd < 0 || fd > i32::MAX as i64 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "Invalid file descriptor: {fd}"
        )));
    }
    Ok(fd as i32)
}
