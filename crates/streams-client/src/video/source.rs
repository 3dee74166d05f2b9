//! [`VideoSource`]: where a local video track's pictures come from (the test pattern, the screen, a
//! camera). The capture thread asks for one picture per frame period.
use crate::video::VideoError;
use crate::video::frame::I420Frame;

/// A producer of pictures at a fixed size and rate.
pub trait VideoSource: Send {
    /// Width and height of the pictures it produces.
    fn size(&self) -> (usize, usize);
    /// Pictures per second it is meant to be read at.
    fn frame_rate(&self) -> u32;
    /// The picture for a frame captured at `capture_us` (µs since the Unix epoch). An error ends the
    /// track (a camera unplugged, a display closed).
    fn next_frame(&mut self, capture_us: u64) -> Result<I420Frame, VideoError>;
    /// One line for logs and the CLI.
    fn describe(&self) -> String;
}
