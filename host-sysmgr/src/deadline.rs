//! Deadlines that cannot overflow: a timeout of any size (`u64::MAX` seconds
//! from the command line) gives a far-off instant, never a panic.

use std::time::{Duration, Instant};

/// The most any deadline is put off: about 136 years.
const FAR: Duration = Duration::from_secs(u32::MAX as u64);

/// `now + timeout`, saturated at [`FAR`] from now.
pub fn after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(FAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_saturate() {
        let d = after(Duration::from_secs(u64::MAX));
        assert!(d > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        assert!(after(Duration::MAX) >= d - Duration::from_secs(1));
        assert!(after(Duration::ZERO) <= Instant::now());
    }
}
