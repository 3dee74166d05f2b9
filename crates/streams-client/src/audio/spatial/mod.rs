//! Positional voice, engine-agnostic: mono voices rendered at positions around a listener into
//! stereo — distance attenuation with WebAudio's PannerNode models (inverse, linear, exponential;
//! reference distance, maximum distance, rolloff), HRTF from measured head-related impulse responses
//! (a SOFA file read by the pure-Rust `sofar` crate, partitioned FFT convolution, crossfaded when a
//! source moves) or equal-power panning, per-source gain and mute, and a limiter on the mix.
//!
//! Two halves, as a real-time audio path needs: a [`SpatialScene`] where poses change (the game's
//! thread: it places each voice, prepares HRTF filters and takes the voices engines hand over) and a
//! [`SpatialMixer`] where the output pulls (the audio callback: it renders, never blocking or
//! allocating). They talk through bounded lock-free queues.
//!
//! Coordinates are Bevy's: right-handed, +Y up, a listener looks along its `forward` (−Z by default).
//!
//! The bundled HRIRs are the MIT KEMAR set (normal pinna): Gardner, W. G., and Martin, K. D. (1994),
//! "HRTF measurements of a KEMAR dummy-head microphone", MIT Media Lab Perceptual Computing Technical
//! Report #280. Copyright 1994 MIT Media Laboratory, free to use with this citation.
mod geometry;
mod hrtf;
mod render;
mod scene;
#[cfg(test)]
mod tests;

pub use geometry::{Attenuation, DistanceModel, Pose, equal_power_gains};
pub use hrtf::Hrtf;
pub use render::SpatialMixer;
pub use scene::{SourceParams, SpatialScene};

/// A point or direction, `[x, y, z]`.
pub type Vec3 = [f32; 3];

/// Samples per rendering block (10 ms at 48 kHz).
pub const BLOCK: usize = 480;
/// Convolution partition (divides [`BLOCK`]).
const PARTITION: usize = 240;
/// A moving source's HRTF is crossfaded over this many samples.
const CROSSFADE: usize = 240;
/// Limiter ceiling (linear, about −0.9 dBFS).
const CEILING: f32 = 0.9;

/// How direction is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Panning {
    /// Head-related impulse responses (needs an [`Hrtf`]; falls back to equal power without one).
    #[default]
    Hrtf,
    /// Equal-power stereo panning (WebAudio's `equalpower`).
    EqualPower,
}

/// Spatial audio failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpatialError {
    /// The HRTF file could not be read.
    #[error("cannot read the HRTF set {path}: {reason}")]
    Hrtf {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}
