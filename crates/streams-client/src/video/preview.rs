//! [`PreviewSource`]: the local preview of a video track. It wraps the track's source and, on the
//! capture thread, puts each picture it gives (as RGBA, for a texture) into a [`VideoSlot`] the
//! owner reads like a remote track's. Pictures are converted at most `max_fps` times a second so a
//! preview never costs the encoder its frame rate.
use std::time::Duration;

use crate::video::VideoError;
use crate::video::frame::I420Frame;
use crate::video::receiver::{DecodedVideo, VideoSlot};
use crate::video::source::VideoSource;

/// A video source that also shows what it captures in a [`VideoSlot`].
pub struct PreviewSource {
    inner: Box<dyn VideoSource>,
    slot: VideoSlot,
    min_interval_us: u64,
    last_us: Option<u64>,
    shown: u64,
}

impl PreviewSource {
    /// Wraps `inner`; pictures go to `slot`, at most `max_fps` a second.
    pub fn new(inner: Box<dyn VideoSource>, slot: VideoSlot, max_fps: u32) -> Self {
        PreviewSource {
            inner,
            slot,
            // 10% slack: capture times jitter, and a picture due a hair early still counts.
            min_interval_us: Duration::from_secs(1).as_micros() as u64 * 9
                / 10
                / u64::from(max_fps.max(1)),
            last_us: None,
            shown: 0,
        }
    }

    fn show(&mut self, picture: &I420Frame, capture_us: u64) {
        if self
            .last_us
            .is_some_and(|last| capture_us.saturating_sub(last) < self.min_interval_us)
        {
            return;
        }
        self.last_us = Some(capture_us);
        let mut rgba = Vec::new();
        picture.write_rgba(&mut rgba);
        self.slot.put(DecodedVideo {
            picture: picture.clone(),
            rgba: Some(rgba),
            capture_us,
            decoded_us: capture_us,
            index: self.shown,
        });
        self.shown += 1;
    }
}

impl VideoSource for PreviewSource {
    fn size(&self) -> (usize, usize) {
        self.inner.size()
    }

    fn frame_rate(&self) -> u32 {
        self.inner.frame_rate()
    }

    fn next_frame(&mut self, capture_us: u64) -> Result<I420Frame, VideoError> {
        let picture = self.inner.next_frame(capture_us)?;
        self.show(&picture, capture_us);
        Ok(picture)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::pattern::PatternSource;

    #[test]
    fn the_preview_shows_what_is_captured_at_its_own_rate() {
        let slot = VideoSlot::default();
        let pattern = PatternSource::new(128, 96, 30).unwrap();
        let mut source = PreviewSource::new(Box::new(pattern), slot.clone(), 10);
        assert_eq!(source.size(), (128, 96));
        // 30 pictures a second for one second, previewed at most 10 times.
        for i in 0..30u64 {
            let picture = source.next_frame(1_000_000 + i * 33_333).unwrap();
            let (_, shown) = slot.newer_than(0).unwrap();
            assert_eq!(shown.rgba.as_ref().unwrap().len(), 128 * 96 * 4);
            if shown.capture_us == 1_000_000 + i * 33_333 {
                assert_eq!(shown.picture, picture);
            }
        }
        assert_eq!(slot.version(), 10);
    }
}
