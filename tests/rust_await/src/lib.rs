//! A test-only extension: Rust code that awaits on whatever asyncio loop
//! runs it, through pyo3-async-runtimes (its tokio runtime on threads of
//! its own), the way Rust libraries for Python do. tests/test_rust_await.py
//! runs these on stock asyncio and on tokioloop and expects the same: the
//! futures complete through `call_soon_threadsafe` from tokio's threads,
//! and Python awaitables are driven by the running loop.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `await sleep_then(seconds, value)`: `value`, after a tokio sleep.
#[pyfunction]
fn sleep_then(py: Python<'_>, seconds: f64, value: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        Ok(value)
    })
}

/// `await fail_after(seconds, message)`: raises `ValueError(message)`.
#[pyfunction]
fn fail_after(py: Python<'_>, seconds: f64, message: String) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        Err::<(), _>(PyValueError::new_err(message))
    })
}

/// `await double_of(awaitable)`: Rust awaits a Python awaitable (run by
/// the calling loop) and returns twice its result.
#[pyfunction]
fn double_of<'py>(py: Python<'py>, awaitable: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let inner = pyo3_async_runtimes::tokio::into_future(awaitable)?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let value = inner.await?;
        Python::attach(|py| {
            value
                .bind(py)
                .call_method1("__mul__", (2,))
                .map(Bound::unbind)
        })
    })
}

#[pymodule]
fn rust_await(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sleep_then, m)?)?;
    m.add_function(wrap_pyfunction!(fail_after, m)?)?;
    m.add_function(wrap_pyfunction!(double_of, m)?)?;
    Ok(())
}
