//! The loop's clock: `CLOCK_MONOTONIC` as float seconds.
//!
//! It is the same clock as `time.monotonic()`, so `loop.time()` values mix
//! freely with the stock loop's and with user code, and it keeps full
//! nanosecond precision (uvloop's millisecond clock is a known complaint).

use std::time::Duration;

/// Seconds on the monotonic clock, as `time.monotonic()` reports them.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// How long from `now` until `when`, clamped to zero and to a day so a huge
/// or infinite deadline cannot overflow the driver's timer.
pub fn until(when: f64, now: f64) -> Duration {
    const MAX_WAIT: f64 = 86_400.0;
    let secs = (when - now).clamp(0.0, MAX_WAIT);
    if secs.is_nan() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic();
        let b = monotonic();
        assert!(b >= a);
        assert!(a > 0.0);
    }

    #[test]
    fn until_clamps() {
        assert_eq!(until(1.0, 2.0), Duration::ZERO);
        assert_eq!(until(3.5, 2.0), Duration::from_secs_f64(1.5));
        assert_eq!(until(f64::INFINITY, 0.0), Duration::from_secs(86_400));
        assert_eq!(until(f64::NAN, 0.0), Duration::ZERO);
    }
}
