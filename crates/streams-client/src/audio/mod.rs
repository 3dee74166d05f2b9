//! Audio building blocks of the media plane, engine- and network-agnostic: synthetic sources, the Opus
//! voice codec with FEC and concealment, an adaptive jitter buffer, and signal analysis (level, dominant
//! frequency, speaking detection), and what plays remote voices: each voice's [`playout`], the
//! lock-free [`handoff`] from engines to the output, and the mono [`mixer`]. Everything here takes
//! time as an argument (only the output edges read the clock); nothing but [`device`] spawns threads.
pub mod analysis;
pub mod codec;
pub mod device;
pub mod handoff;
pub mod jitter;
pub mod mixer;
pub mod output;
pub mod playout;
pub mod resample;
pub mod source;
pub mod spatial;

/// The sample rate of every internal audio path.
pub const SAMPLE_RATE: u32 = 48_000;
