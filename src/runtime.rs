//! The tokio runtime each loop owns: current-thread, driven only from the
//! thread that calls `run_forever`, with park hooks that release the GIL
//! while the thread blocks in the driver (see `gil_park`). No time driver:
//! the loop's timers wake it through a timerfd (see `timer_fd`).

use std::io;

use tokio::runtime::{Builder, Runtime};

use crate::gil_park;

pub fn build() -> io::Result<Runtime> {
    Builder::new_current_thread()
        .enable_io()
        .on_thread_park(gil_park::before_park)
        .on_thread_unpark(gil_park::after_unpark)
        .build()
}
