//! [`StreamResampler`]: streaming linear resampling of mono audio between any rate and another,
//! carrying its phase across blocks (for capture devices at 44.1 kHz and the like).

/// Resamples a continuous mono stream block by block.
#[derive(Clone, Debug)]
pub struct StreamResampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output sample, relative to the first sample of the next input block
    /// (may be negative: between the carried last sample and the block's first).
    position: f64,
    last: f32,
}

impl StreamResampler {
    /// A resampler from `from_rate` to `to_rate`.
    pub fn new(from_rate: u32, to_rate: u32) -> Self {
        StreamResampler {
            step: f64::from(from_rate.max(1)) / f64::from(to_rate.max(1)),
            position: 0.0,
            last: 0.0,
        }
    }

    /// Appends the resampled version of `input` to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if input.is_empty() {
            return;
        }
        // Index -1 is the carried last sample of the previous block.
        let at = |i: isize| -> f32 {
            if i < 0 {
                self.last
            } else {
                input[(i as usize).min(input.len() - 1)]
            }
        };
        while self.position < (input.len() - 1) as f64 {
            let base = self.position.floor();
            let frac = (self.position - base) as f32;
            let i = base as isize;
            out.push(at(i) + (at(i + 1) - at(i)) * frac);
            self.position += self.step;
        }
        self.position -= input.len() as f64;
        self.last = input[input.len() - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::dominant_frequency;

    #[test]
    fn a_44k1_stream_resampled_in_blocks_keeps_its_frequency_and_length() {
        let input: Vec<f32> = (0..44_100)
            .map(|i| (std::f64::consts::TAU * 440.0 * f64::from(i) / 44_100.0).sin() as f32)
            .collect();
        let mut r = StreamResampler::new(44_100, 48_000);
        let mut out = Vec::new();
        for block in input.chunks(441) {
            r.process(block, &mut out);
        }
        assert!(
            (out.len() as i64 - 48_000).abs() <= 2,
            "{} samples",
            out.len()
        );
        assert!((dominant_frequency(&out, 48_000) - 440.0).abs() < 1.0);
    }
}
