//! `tokioloop._tokioloop`: the native half of tokioloop.
//!
//! Module map (one job per file):
//! - `loop_core`: the `LoopCore` class: ready queue, timers, the run loop.
//! - `handles`: `Handle`/`TimerHandle`, running callbacks in their context.
//! - `timers`: the timer heap with cancelled-timer compaction (pure Rust).
//! - `clock`: the monotonic clock behind `loop.time()` (pure Rust).
//! - `runtime`, `gil_park`: the per-loop tokio runtime and the park hooks
//!   that release the GIL only while the loop thread waits.
//! - `fd_watch`: fd readiness from tokio's reactor as level-triggered
//!   `add_reader`/`add_writer` callbacks.
//! - `native_io`: reactor registrations for native I/O objects.
//! - `stream_transport`: the native engine of TCP/Unix stream transports.
//! - `stream_owner`: the Python stream transport's construction and
//!   connection-lost clean-up, natively.
//! - `datagram_transport`: the native engine of UDP/Unix datagram transports.
//! - `transport_support`: what the native transports share (contexts,
//!   error reporting, flow-control callbacks).
//! - `ssl_protocol`: the native `WRAPPED`-state data paths of the TLS
//!   protocol (Python 3.11+).
//! - `accept`: one non-blocking `accept4` on a TCP listener, for the
//!   accept loop.
//! - `inet_address`: IPv4/IPv6 socket addresses as the socket module's
//!   tuples (accepted peers, a new connection's two ends).
//! - `numeric_host`: asyncio's `_ipaddr_info` (is the host already an IP
//!   address?) for `create_connection`'s common case.
//! - `sock_io`: syscall-level socket reads and writes into/out of `bytes`.
//! - `spare_bytes`: the loop's recycled `bytes` for small stream reads.
//! - `sock_ops`: `sock_recv`/`sock_recv_into`/`sock_sendall` below the
//!   coroutine: asyncio's prologue in one call, and the waiting half.
//! - `socket_fields`: a `socket.socket`'s fd and timeout read from the C
//!   object (layout checked once against its methods).
//! - `socket_object`: `socket.socket` objects built without the frame of
//!   their `__init__` (accepted and client connections).
//! - `sock_watch`: a socket's registration kept across those waits (in the
//!   loop's epoll instance, `loop_poll`).
//! - `wakeup`: the signal wake-up socket.
//! - `errors`: OS errors raised with their errno, as Python raises them.
//! - `pyrefs`: cached Python objects and a vectorcall helper.
//! - `fastcall`: hand-parsed entry points of the scheduling methods.
//! - `counted_mutex`: a locked queue whose length reads without the lock.

use pyo3::prelude::*;

pub mod accept;
pub mod batch_context;
pub mod clock;
pub mod connect_op;
pub mod context_pool;
pub mod counted_mutex;
pub mod datagram_transport;
pub mod errors;
pub mod extra_info;
pub mod fastcall;
pub mod fd_watch;
pub mod gil_cell;
pub mod gil_park;
pub mod handles;
pub mod heap_tuning;
pub mod inet_address;
pub mod loop_core;
pub mod loop_poll;
pub mod native_io;
pub mod numeric_host;
pub mod park;
mod pyrefs;
pub mod runtime;
pub mod sock_io;
pub mod sock_ops;
pub mod sock_watch;
pub mod socket_fields;
pub mod socket_object;
pub mod spare_bytes;
pub mod ssl_protocol;
pub mod stream_owner;
pub mod stream_transport;
pub mod thread_context;
pub mod timer_fd;
pub mod timers;
pub mod transport_map;
pub mod transport_support;
pub mod transport_write;
pub mod wakeup;

// `gil_used = true`: the loop's GIL-guarded state (`gil_cell`) relies on the
// GIL; on a free-threaded build, importing the module turns it back on.
#[pymodule(gil_used = true)]
fn _tokioloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<loop_core::LoopCore>()?;
    fastcall::install(m.py(), &m.py().get_type::<loop_core::LoopCore>())?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<stream_transport::StreamTransport>()?;
    transport_write::install(&m.py().get_type::<stream_transport::StreamTransport>())?;
    m.add_class::<datagram_transport::DatagramTransport>()?;
    m.add_class::<ssl_protocol::SslProtocolCore>()?;
    m.add_class::<transport_map::TransportMap>()?;
    m.add_class::<inet_address::SocketNames>()?;
    m.add_class::<connect_op::ConnectOp>()?;
    m.add_function(wrap_pyfunction!(fd_watch::_readable, m)?)?;
    m.add_function(wrap_pyfunction!(socket_fields::_reads_socket_fields, m)?)?;
    m.add_function(wrap_pyfunction!(numeric_host::_numeric_host_info, m)?)?;
    m.add_function(wrap_pyfunction!(
        transport_support::_set_result_unless_cancelled,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(stream_owner::_init_stream_owner, m)?)?;
    m.add_function(wrap_pyfunction!(
        transport_write::_install_core_forwarders,
        m
    )?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
