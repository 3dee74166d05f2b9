//! Signal analysis: level in dBFS, dominant frequency (Goertzel scan, coarse then fine), the share of a
//! signal's energy carried by one tone, and a speaking detector with attack and hold (like PrivMX's
//! active speaker detector).

/// RMS level in dBFS (-120 for silence).
pub fn level_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return -120.0;
    }
    let mean_square =
        samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len() as f64;
    if mean_square <= 1e-12 {
        -120.0
    } else {
        (10.0 * mean_square.log10()) as f32
    }
}

/// Power of `samples` at `frequency` (Goertzel).
fn goertzel_power(samples: &[f32], rate: u32, frequency: f64) -> f64 {
    let omega = std::f64::consts::TAU * frequency / f64::from(rate);
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency between 50 Hz and 4 kHz, to within about 1 Hz for a second of tone.
/// Scans 10 Hz steps on up to 100 ms, then 0.5 Hz steps around the peak on up to one second.
pub fn dominant_frequency(samples: &[f32], rate: u32) -> f32 {
    if samples.len() < 64 {
        return 0.0;
    }
    let short = &samples[..samples.len().min(rate as usize / 10)];
    let coarse = (5..=400)
        .map(|k| f64::from(k) * 10.0)
        .max_by(|a, b| goertzel_power(short, rate, *a).total_cmp(&goertzel_power(short, rate, *b)))
        .unwrap_or(0.0);
    let long = &samples[..samples.len().min(rate as usize)];
    let fine = (-40..=40)
        .map(|k| coarse + f64::from(k) * 0.5)
        .filter(|f| *f > 0.0)
        .max_by(|a, b| goertzel_power(long, rate, *a).total_cmp(&goertzel_power(long, rate, *b)))
        .unwrap_or(coarse);
    fine as f32
}

/// The share of the energy of `samples` carried at `frequency`, from 0 to about 1: 1 for a pure,
/// continuous tone at that frequency, about 2/len for white noise, and near 0 for a tone a few hertz
/// off over a second of samples. Unlike [`dominant_frequency`], which always names some peak, noise
/// cannot come near a tone's share by chance.
pub fn tone_energy_share(samples: &[f32], rate: u32, frequency: f64) -> f64 {
    let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    if samples.is_empty() || energy <= 1e-12 {
        return 0.0;
    }
    2.0 * goertzel_power(samples, rate, frequency) / (samples.len() as f64 * energy)
}

/// Detects speech from per-frame levels: speaking starts after the level stays above the threshold for
/// `attack_ms`, and ends after it stays below for `hold_ms`. Time is an argument.
#[derive(Clone, Debug)]
pub struct SpeakingDetector {
    /// Level above which a frame counts as voiced.
    pub threshold_dbfs: f32,
    /// How long voice must last before speaking starts.
    pub attack_ms: u64,
    /// How long quiet must last before speaking ends.
    pub hold_ms: u64,
    speaking: bool,
    since: Option<u64>,
}

impl Default for SpeakingDetector {
    fn default() -> Self {
        SpeakingDetector::new(-45.0, 60, 400)
    }
}

impl SpeakingDetector {
    /// A detector with these settings.
    pub fn new(threshold_dbfs: f32, attack_ms: u64, hold_ms: u64) -> Self {
        SpeakingDetector {
            threshold_dbfs,
            attack_ms,
            hold_ms,
            speaking: false,
            since: None,
        }
    }

    /// Whether speech is detected now.
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds one frame's level at `now_ms`; returns the new state when it changes.
    pub fn update(&mut self, now_ms: u64, level_dbfs: f32) -> Option<bool> {
        let voiced = level_dbfs >= self.threshold_dbfs;
        if voiced == self.speaking {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now_ms);
        let needed = if voiced { self.attack_ms } else { self.hold_ms };
        if now_ms.saturating_sub(since) >= needed {
            self.speaking = voiced;
            self.since = None;
            Some(voiced)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_in_dbfs() {
        assert_eq!(level_dbfs(&[0.0; 480]), -120.0);
        let full: Vec<f32> = (0..48_000)
            .map(|i| (std::f64::consts::TAU * 1000.0 * f64::from(i) / 48_000.0).sin() as f32)
            .collect();
        assert!((level_dbfs(&full) - (-3.01)).abs() < 0.05);
    }

    #[test]
    fn dominant_frequency_of_noisy_tones() {
        for f in [220.0, 440.0, 660.0, 1234.0] {
            let mut seed = 1u32;
            let samples: Vec<f32> = (0..48_000)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                    (std::f64::consts::TAU * f * f64::from(i) / 48_000.0).sin() as f32 * 0.5
                        + noise * 0.2
                })
                .collect();
            let got = dominant_frequency(&samples, 48_000);
            assert!((got - f as f32).abs() <= 1.0, "{f}: {got}");
        }
    }

    #[test]
    fn a_tone_carries_its_energy_share_and_noise_does_not() {
        let tone = |f: f64| -> Vec<f32> {
            (0..48_000)
                .map(|i| (std::f64::consts::TAU * f * f64::from(i) / 48_000.0).sin() as f32 * 0.5)
                .collect()
        };
        let share = tone_energy_share(&tone(440.0), 48_000, 440.0);
        assert!((share - 1.0).abs() < 0.01, "{share}");
        assert!(tone_energy_share(&tone(436.0), 48_000, 440.0) < 0.01);
        let mut seed = 7u32;
        let noise: Vec<f32> = (0..48_000)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        assert!(tone_energy_share(&noise, 48_000, 440.0) < 0.001);
        assert_eq!(tone_energy_share(&[0.0; 480], 48_000, 440.0), 0.0);
    }

    #[test]
    fn speaking_needs_attack_and_ends_after_hold() {
        let mut d = SpeakingDetector::new(-40.0, 60, 300);
        assert_eq!(d.update(0, -20.0), None);
        assert_eq!(d.update(20, -20.0), None);
        assert_eq!(d.update(60, -20.0), Some(true));
        // A short pause does not end speech.
        assert_eq!(d.update(80, -60.0), None);
        assert_eq!(d.update(200, -20.0), None);
        assert!(d.is_speaking());
        assert_eq!(d.update(220, -60.0), None);
        assert_eq!(d.update(500, -60.0), None);
        assert_eq!(d.update(520, -60.0), Some(false));
        // A click shorter than the attack is ignored.
        assert_eq!(d.update(600, -10.0), None);
        assert_eq!(d.update(620, -60.0), None);
        assert!(!d.is_speaking());
    }
}
