//! [`PatternCheck`]: judges the decoded pictures of a track that carries the test pattern — frame
//! numbers and capture times read from the pixels, PSNR against the pattern redrawn from its stamp,
//! capture → decode latency — for the listener, tests and benchmarks.
use serde::Serialize;

use crate::video::frame::luma_psnr;
use crate::video::pattern::{PatternSource, read_stamp};
use crate::video::receiver::DecodedVideo;

/// PSNR is measured on at most one picture in this many (redrawing costs a frame's worth of work).
const PSNR_EVERY: u64 = 3;

/// What the pictures of one pattern track showed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PatternReport {
    /// Pictures whose stamp was read.
    pub stamped: u64,
    /// Distinct frame numbers seen.
    pub distinct_frames: u64,
    /// Pictures whose frame number was not above the previous one's.
    pub out_of_order: u64,
    /// First and last frame number read.
    pub first_frame: Option<u32>,
    /// Last frame number read.
    pub last_frame: Option<u32>,
    /// Mean luma PSNR of the measured pictures, dB.
    pub psnr_db: Option<f64>,
    /// Lowest luma PSNR measured, dB.
    pub psnr_min_db: Option<f64>,
    /// Capture (read from the stamp) → decoded, median, ms.
    pub latency_p50_ms: Option<f64>,
    /// Capture → decoded, 95th percentile, ms.
    pub latency_p95_ms: Option<f64>,
}

/// Accumulates a [`PatternReport`] picture by picture.
#[derive(Default)]
pub struct PatternCheck {
    report: PatternReport,
    psnr: Vec<f64>,
    latencies_us: Vec<u64>,
    seen: std::collections::HashSet<u32>,
}

impl PatternCheck {
    /// Looks at one decoded picture.
    pub fn observe(&mut self, decoded: &DecodedVideo) {
        let Some(stamp) = read_stamp(&decoded.picture) else {
            return;
        };
        let r = &mut self.report;
        r.stamped += 1;
        if r.last_frame.is_some_and(|last| stamp.frame <= last) {
            r.out_of_order += 1;
        }
        r.first_frame.get_or_insert(stamp.frame);
        r.last_frame = Some(stamp.frame);
        if self.seen.insert(stamp.frame) {
            r.distinct_frames += 1;
        }
        let capture_us = stamp.capture_us_near(decoded.decoded_us);
        self.latencies_us
            .push(decoded.decoded_us.saturating_sub(capture_us));
        if r.stamped % PSNR_EVERY == 1 {
            let picture = &decoded.picture;
            let expected =
                PatternSource::expected(picture.width(), picture.height(), stamp.frame, capture_us);
            if let Some(psnr) = luma_psnr(&expected, picture) {
                // Identical pictures count as 99 dB so that the mean stays finite.
                self.psnr.push(psnr.min(99.0));
            }
        }
    }

    /// What has been seen so far.
    pub fn report(&self) -> PatternReport {
        let mut report = self.report.clone();
        if !self.psnr.is_empty() {
            report.psnr_db = Some(self.psnr.iter().sum::<f64>() / self.psnr.len() as f64);
            report.psnr_min_db = self.psnr.iter().copied().reduce(f64::min);
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let at = |p: usize| {
            (!sorted.is_empty()).then(|| sorted[(sorted.len() - 1) * p / 100] as f64 / 1000.0)
        };
        report.latency_p50_ms = at(50);
        report.latency_p95_ms = at(95);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::source::VideoSource;

    #[test]
    fn a_clean_pattern_reads_in_order_with_high_psnr() {
        let mut source = PatternSource::new(160, 120, 30).unwrap();
        let mut check = PatternCheck::default();
        for n in 0..6u64 {
            let capture = 1_000_000 + n * 33_333;
            let picture = source.next_frame(capture).unwrap();
            check.observe(&DecodedVideo {
                picture,
                rgba: None,
                capture_us: capture,
                decoded_us: capture + 20_000,
                index: n,
            });
        }
        let report = check.report();
        assert_eq!((report.stamped, report.distinct_frames), (6, 6));
        assert_eq!((report.first_frame, report.last_frame), (Some(0), Some(5)));
        assert_eq!(report.out_of_order, 0);
        assert_eq!(report.psnr_db, Some(99.0));
        assert_eq!(report.latency_p50_ms, Some(20.0));
    }
}
