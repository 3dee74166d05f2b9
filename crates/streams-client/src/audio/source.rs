//! Synthetic audio sources for machines without microphones: a tone, white noise, a WAV clip (looped,
//! resampled to 48 kHz), silence. Each fills mono `f32` frames in `[-1, 1]`.
use std::path::Path;

use super::SAMPLE_RATE;

/// Something that produces mono 48 kHz samples.
pub trait AudioSource: Send {
    /// Fills `out` with the next samples.
    fn fill(&mut self, out: &mut [f32]);
}

/// A sine tone.
#[derive(Clone, Debug)]
pub struct ToneSource {
    frequency: f64,
    amplitude: f32,
    phase: f64,
}

impl ToneSource {
    /// A tone at `frequency` Hz with peak `amplitude` (0–1).
    pub fn new(frequency: f64, amplitude: f32) -> Self {
        ToneSource {
            frequency,
            amplitude,
            phase: 0.0,
        }
    }
}

impl AudioSource for ToneSource {
    fn fill(&mut self, out: &mut [f32]) {
        let step = std::f64::consts::TAU * self.frequency / f64::from(SAMPLE_RATE);
        for sample in out {
            *sample = self.amplitude * self.phase.sin() as f32;
            self.phase = (self.phase + step) % std::f64::consts::TAU;
        }
    }
}

/// White noise (uniform, xorshift), the same for the same seed: a broadband signal for tests and
/// benchmarks.
#[derive(Clone, Debug)]
pub struct NoiseSource {
    state: u64,
    amplitude: f32,
}

impl NoiseSource {
    /// Noise from `seed` with peak `amplitude` (0–1).
    pub fn new(seed: u64, amplitude: f32) -> Self {
        NoiseSource {
            // Xorshift never leaves zero.
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
            amplitude,
        }
    }
}

impl AudioSource for NoiseSource {
    fn fill(&mut self, out: &mut [f32]) {
        for sample in out {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let unit = (self.state >> 40) as f32 / (1u64 << 24) as f32;
            *sample = (unit * 2.0 - 1.0) * self.amplitude;
        }
    }
}

/// Silence.
#[derive(Clone, Copy, Debug, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn fill(&mut self, out: &mut [f32]) {
        out.fill(0.0);
    }
}

/// A WAV clip, mixed down to mono, resampled to 48 kHz (linear interpolation), played in a loop.
#[derive(Clone, Debug)]
pub struct ClipSource {
    samples: Vec<f32>,
    position: usize,
}

/// A clip could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot read audio clip {path}: {reason}")]
pub struct ClipError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl ClipSource {
    /// Loads a WAV file (integer or float samples, any rate, any channel count).
    pub fn load(path: &Path) -> Result<Self, ClipError> {
        let error = |reason: String| ClipError {
            path: path.display().to_string(),
            reason,
        };
        let reader = hound::WavReader::open(path).map_err(|e| error(e.to_string()))?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let interleaved: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .into_samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(|e| error(e.to_string()))?,
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
                    .map_err(|e| error(e.to_string()))?
            }
        };
        let mono: Vec<f32> = interleaved
            .chunks(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect();
        if mono.is_empty() {
            return Err(error("the clip has no samples".into()));
        }
        Ok(ClipSource {
            samples: resample_linear(&mono, spec.sample_rate, SAMPLE_RATE),
            position: 0,
        })
    }

    /// A clip from 48 kHz mono samples.
    pub fn from_samples(samples: Vec<f32>) -> Self {
        ClipSource {
            samples,
            position: 0,
        }
    }
}

impl AudioSource for ClipSource {
    fn fill(&mut self, out: &mut [f32]) {
        if self.samples.is_empty() {
            out.fill(0.0);
            return;
        }
        for sample in out {
            *sample = self.samples[self.position];
            self.position = (self.position + 1) % self.samples.len();
        }
    }
}

/// Resamples by linear interpolation (adequate for speech clips and test signals).
pub fn resample_linear(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if from_rate == to_rate || input.len() < 2 || from_rate == 0 {
        return input.to_vec();
    }
    let ratio = f64::from(from_rate) / f64::from(to_rate);
    let out_len = ((input.len() as f64) / ratio).floor() as usize;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * ratio;
            let idx = pos.floor() as usize;
            let frac = (pos - idx as f64) as f32;
            let a = input[idx.min(input.len() - 1)];
            let b = input[(idx + 1).min(input.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::dominant_frequency;

    #[test]
    fn tone_has_its_frequency_and_amplitude() {
        let mut tone = ToneSource::new(440.0, 0.5);
        let mut buf = vec![0.0; 48_000];
        tone.fill(&mut buf);
        let peak = buf.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 1e-3);
        assert!((dominant_frequency(&buf, SAMPLE_RATE) - 440.0).abs() < 1.0);
    }

    #[test]
    fn wav_clips_are_read_mixed_down_and_resampled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..44_100 {
            let v = (std::f64::consts::TAU * 660.0 * f64::from(i) / 44_100.0).sin();
            let s = (v * 16_000.0) as i16;
            writer.write_sample(s).unwrap();
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        let mut clip = ClipSource::load(&path).unwrap();
        let mut buf = vec![0.0; 48_000];
        clip.fill(&mut buf);
        assert!((dominant_frequency(&buf, SAMPLE_RATE) - 660.0).abs() < 2.0);
        assert!(ClipSource::load(&dir.path().join("missing.wav")).is_err());
    }
}
