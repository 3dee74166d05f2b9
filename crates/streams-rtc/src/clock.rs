//! The media clock: monotonic time ([`Instant`]) for everything that paces, buffers and times out,
//! and one conversion to wall-clock microseconds for what crosses machines (the capture time sealed
//! inside each frame, for lip sync and one-way latency).
//!
//! The conversion is anchored once per process: the wall clock is read the first time it is needed
//! and every later conversion adds the monotonic time elapsed since. An NTP step or a changed system
//! clock therefore never makes a jitter buffer jump; wall-clock readings of two machines still agree
//! as well as their clocks did when each process started.
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The instant the process anchored wall-clock time at, and the wall time then (µs since the Unix
/// epoch).
fn anchor() -> (Instant, u64) {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (Instant::now(), wall)
    })
}

/// Wall-clock microseconds since the Unix epoch at monotonic instant `at` (earlier instants than the
/// anchor count back from it).
pub fn wall_us(at: Instant) -> u64 {
    let (instant, wall) = anchor();
    match at.checked_duration_since(instant) {
        Some(after) => wall.saturating_add(after.as_micros() as u64),
        None => wall.saturating_sub(instant.duration_since(at).as_micros() as u64),
    }
}

/// [`wall_us`] now: for the edges of the program (capture threads, output callbacks, tools) that
/// have no `now` handed to them.
pub fn wall_us_now() -> u64 {
    wall_us(Instant::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn conversion_follows_the_monotonic_clock_in_both_directions() {
        let now = Instant::now();
        let base = wall_us(now);
        // Within a microsecond: each conversion truncates to whole microseconds.
        let later = wall_us(now + Duration::from_millis(20));
        assert!(later.abs_diff(base + 20_000) <= 1, "{later} vs {base}");
        if let Some(before) = now.checked_sub(Duration::from_millis(5)) {
            assert!(wall_us(before).abs_diff(base - 5_000) <= 1);
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        // Anchored to the wall clock (within what this test's own run could drift).
        assert!(wall.abs_diff(wall_us_now()) < 5_000_000);
    }
}
