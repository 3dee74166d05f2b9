//! Audio building blocks of the media plane, engine- and network-agnostic: synthetic sources, the Opus
//! voice codec with FEC and concealment, an adaptive jitter buffer, and signal analysis (level, dominant
//! frequency, speaking detection). Everything here takes time as an argument; nothing spawns threads.
pub mod analysis;
pub mod codec;
pub mod device;
pub mod jitter;
pub mod resample;
pub mod source;
pub mod spatial;

/// The sample rate of every internal audio path.
pub const SAMPLE_RATE: u32 = 48_000;
