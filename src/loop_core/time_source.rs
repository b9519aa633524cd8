//! Which clock the loop's scheduler reads.
//!
//! asyncio's `_run_once` and `call_later` ask `self.time()` what time it
//! is, so code that replaces `time` (tests patch it with
//! `mock.patch.object(loop, "time")` to jump to a deadline; a subclass may
//! run on a clock of its own) moves timers. tokioloop reads the monotonic
//! clock natively, and reads `time()` through Python only when it is
//! overridden: an instance attribute (noticed by `__setattr__` and
//! `__delattr__`, see `note_attribute_set`) or a class attribute other than
//! the native method (checked again at each run).

use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::LoopCore;
use crate::clock;

const UNKNOWN: u8 = 0;
const NATIVE: u8 = 1;
const OVERRIDDEN: u8 = 2;

/// The loop's answer to "is `time` overridden?", worked out on first use.
#[derive(Default)]
pub(super) struct TimeSource(AtomicU8);

impl TimeSource {
    /// Work it out again on next use.
    pub(super) fn forget(&self) {
        self.0.store(UNKNOWN, Ordering::Relaxed);
    }
}

impl LoopCore {
    /// The time by the loop's clock, `time()` if overridden.
    pub(crate) fn now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        Ok(Self::overridden_now(slf)?.unwrap_or_else(clock::monotonic))
    }

    /// The overridden `time()`'s answer, or None when the loop runs on the
    /// monotonic clock.
    pub(super) fn overridden_now(slf: &Bound<'_, Self>) -> PyResult<Option<f64>> {
        let source = &slf.get().time_source.0;
        let overridden = match source.load(Ordering::Relaxed) {
            NATIVE => false,
            OVERRIDDEN => true,
            _ => {
                let overridden = time_is_overridden(slf)?;
                source.store(
                    if overridden { OVERRIDDEN } else { NATIVE },
                    Ordering::Relaxed,
                );
                overridden
            }
        };
        if !overridden {
            return Ok(None);
        }
        let py = slf.py();
        Ok(Some(slf.call_method0(intern!(py, "time"))?.extract()?))
    }

    /// An attribute of the loop was set or deleted.
    pub(super) fn note_attribute_set(&self, name: &Bound<'_, PyAny>) {
        if name.eq(intern!(name.py(), "time")).unwrap_or(true) {
            self.time_source.forget();
        }
    }
}

fn time_is_overridden(slf: &Bound<'_, LoopCore>) -> PyResult<bool> {
    let py = slf.py();
    let time = intern!(py, "time");
    if let Ok(dict) = slf.getattr(intern!(py, "__dict__")) {
        if let Ok(dict) = dict.cast::<PyDict>() {
            if dict.contains(time)? {
                return Ok(true);
            }
        }
    }
    let native = py.get_type::<LoopCore>().getattr(time)?;
    Ok(!slf.get_type().getattr(time)?.is(&native))
}
