//! Positional voice, engine-agnostic: [`SpatialMixer`] renders mono voices at positions around a
//! listener into stereo — distance attenuation with WebAudio's PannerNode models (inverse, linear,
//! exponential; reference distance, maximum distance, rolloff), HRTF from measured head-related
//! impulse responses (a SOFA file read by the pure-Rust `sofar` crate, partitioned FFT convolution,
//! crossfaded when a source moves) or equal-power panning, per-source gain and mute, and a limiter on
//! the mix. It runs where the output device pulls (an audio callback); poses arrive as plain values.
//!
//! Coordinates are Bevy's: right-handed, +Y up, a listener looks along its `forward` (−Z by default).
//!
//! The bundled HRIRs are the MIT KEMAR set (normal pinna): Gardner, W. G., and Martin, K. D. (1994),
//! "HRTF measurements of a KEMAR dummy-head microphone", MIT Media Lab Perceptual Computing Technical
//! Report #280. Copyright 1994 MIT Media Laboratory, free to use with this citation.
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use sofar::reader::{Filter, OpenOptions, Sofar};
use sofar::render::{FilterTransition, Renderer, RendererPlan};

use crate::audio::SAMPLE_RATE;
use crate::audio::device::StereoSource;
use crate::audio::source::AudioSource;

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

/// Where a listener is and where it looks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    /// Position.
    pub position: Vec3,
    /// The direction it faces (unit length).
    pub forward: Vec3,
    /// Its up direction (unit length).
    pub up: Vec3,
}

impl Default for Pose {
    fn default() -> Self {
        Pose {
            position: [0.0; 3],
            forward: [0.0, 0.0, -1.0],
            up: [0.0, 1.0, 0.0],
        }
    }
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: Vec3, b: Vec3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

impl Pose {
    /// Where `point` is as this listener hears it: (right, up, forward) components of the unit
    /// direction towards it, and its distance.
    pub fn hear(&self, point: Vec3) -> (Vec3, f32) {
        let offset = sub(point, self.position);
        let distance = dot(offset, offset).sqrt();
        if distance < 1e-6 {
            return ([0.0, 0.0, 1.0], 0.0);
        }
        let right = cross(self.forward, self.up);
        let local = [
            dot(offset, right) / distance,
            dot(offset, self.up) / distance,
            dot(offset, self.forward) / distance,
        ];
        (local, distance)
    }
}

/// How loudness falls with distance (WebAudio's `distanceModel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DistanceModel {
    /// `ref / (ref + rolloff · (max(d, ref) − ref))`.
    #[default]
    Inverse,
    /// `1 − rolloff · (clamp(d, ref, max) − ref) / (max − ref)`.
    Linear,
    /// `(max(d, ref) / ref)^−rolloff`.
    Exponential,
}

/// Distance attenuation (WebAudio PannerNode parameters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attenuation {
    /// The model.
    pub model: DistanceModel,
    /// Distance at which the gain is 1.
    pub ref_distance: f32,
    /// Beyond this the linear model is silent; the others stop falling... and proximity unsubscribes.
    pub max_distance: f32,
    /// How fast the gain falls.
    pub rolloff: f32,
}

impl Default for Attenuation {
    fn default() -> Self {
        Attenuation {
            model: DistanceModel::Inverse,
            ref_distance: 1.0,
            max_distance: 10_000.0,
            rolloff: 1.0,
        }
    }
}

impl Attenuation {
    /// The gain at `distance`.
    pub fn gain(&self, distance: f32) -> f32 {
        let reference = self.ref_distance.max(1e-3);
        match self.model {
            DistanceModel::Inverse => {
                let d = distance.max(reference);
                reference / (reference + self.rolloff.max(0.0) * (d - reference))
            }
            DistanceModel::Linear => {
                let max = self.max_distance.max(reference);
                if max <= reference {
                    return 1.0;
                }
                let d = distance.clamp(reference, max);
                (1.0 - self.rolloff.clamp(0.0, 1.0) * (d - reference) / (max - reference)).max(0.0)
            }
            DistanceModel::Exponential => {
                let d = distance.max(reference);
                (d / reference).powf(-self.rolloff.max(0.0))
            }
        }
    }
}

/// How direction is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Panning {
    /// Head-related impulse responses (needs an [`Hrtf`]; falls back to equal power without one).
    #[default]
    Hrtf,
    /// Equal-power stereo panning (WebAudio's `equalpower`).
    EqualPower,
}

/// WebAudio's equal-power gains (left, right) for a local direction (right, up, forward).
pub fn equal_power_gains(local: Vec3) -> (f32, f32) {
    let mut azimuth = local[0].atan2(local[2]).to_degrees();
    // Sources behind are panned like their mirror image in front.
    if azimuth > 90.0 {
        azimuth = 180.0 - azimuth;
    } else if azimuth < -90.0 {
        azimuth = -180.0 - azimuth;
    }
    let x = (azimuth + 90.0) / 180.0;
    let angle = x * std::f32::consts::FRAC_PI_2;
    (angle.cos(), angle.sin())
}

/// A measured HRTF set, resampled to 48 kHz, with the FFT plan its renderers share.
pub struct Hrtf {
    sofa: Sofar,
    plan: RendererPlan,
}

impl Hrtf {
    /// Reads a SOFA file.
    pub fn load(path: &Path) -> Result<Self, SpatialError> {
        let error = |reason: String| SpatialError::Hrtf {
            path: path.display().to_string(),
            reason,
        };
        let sofa = OpenOptions::new()
            .sample_rate(SAMPLE_RATE as f32)
            .open(path)
            .map_err(|e| error(e.to_string()))?;
        let plan = RendererPlan::builder(sofa.filter_len())
            .with_sample_rate(SAMPLE_RATE as f32)
            .with_partition_len(PARTITION)
            .build()
            .map_err(|e| error(e.to_string()))?;
        Ok(Hrtf { sofa, plan })
    }

    /// The impulse responses for a local direction (right, up, forward).
    fn filter(&self, local: Vec3) -> Filter {
        let mut filter = Filter::new(self.sofa.filter_len());
        // SOFA: x forward, y left, z up.
        self.sofa.filter(local[2], -local[0], local[1], &mut filter);
        filter
    }

    fn renderer(&self) -> Option<Renderer> {
        Renderer::builder(&self.plan)
            .with_filter_transition(FilterTransition::crossfade(CROSSFADE))
            .build()
            .ok()
    }
}

/// A voice's place and loudness.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceParams {
    /// Position.
    pub position: Vec3,
    /// Distance attenuation.
    pub attenuation: Attenuation,
    /// Linear gain (volume).
    pub gain: f32,
    /// Muted: still pulled (its buffers stay current), not heard.
    pub muted: bool,
}

impl Default for SourceParams {
    fn default() -> Self {
        SourceParams {
            position: [0.0; 3],
            attenuation: Attenuation::default(),
            gain: 1.0,
            muted: false,
        }
    }
}

struct Voice {
    id: String,
    source: Box<dyn AudioSource>,
    params: SourceParams,
    renderer: Option<Renderer>,
    /// The direction the installed HRTF filter is for.
    filter_direction: Option<Vec3>,
    gains: (f32, f32),
    /// Smoothed level of this voice in the output, dBFS.
    level_dbfs: f32,
}

/// Renders mono voices at positions into stereo for one listener.
pub struct SpatialMixer {
    voices: Vec<Voice>,
    listener: Pose,
    hrtf: Option<Arc<Hrtf>>,
    panning: Panning,
    limiter_gain: f32,
    input: Vec<f32>,
    left: Vec<f32>,
    right: Vec<f32>,
    voice_left: Vec<f32>,
    voice_right: Vec<f32>,
    /// Rendered stereo not handed out yet (interleaved).
    pending: VecDeque<f32>,
}

impl SpatialMixer {
    /// A mixer; `hrtf` enables HRTF panning (equal power without it).
    pub fn new(hrtf: Option<Arc<Hrtf>>) -> Self {
        SpatialMixer {
            voices: Vec::new(),
            listener: Pose::default(),
            hrtf,
            panning: Panning::Hrtf,
            limiter_gain: 1.0,
            input: vec![0.0; BLOCK],
            left: vec![0.0; BLOCK],
            right: vec![0.0; BLOCK],
            voice_left: vec![0.0; BLOCK],
            voice_right: vec![0.0; BLOCK],
            pending: VecDeque::new(),
        }
    }

    /// Chooses HRTF or equal-power panning.
    pub fn set_panning(&mut self, panning: Panning) {
        self.panning = panning;
    }

    /// Moves the listener.
    pub fn set_listener(&mut self, pose: Pose) {
        self.listener = pose;
    }

    /// Adds (or replaces) a voice.
    pub fn add(
        &mut self,
        id: impl Into<String>,
        source: Box<dyn AudioSource>,
        params: SourceParams,
    ) {
        let id = id.into();
        self.remove(&id);
        let renderer = self.hrtf.as_ref().and_then(|h| h.renderer());
        self.voices.push(Voice {
            id,
            source,
            params,
            renderer,
            filter_direction: None,
            gains: (0.0, 0.0),
            level_dbfs: -120.0,
        });
    }

    /// Removes a voice.
    pub fn remove(&mut self, id: &str) {
        self.voices.retain(|v| v.id != id);
    }

    /// Updates a voice's position and loudness; `false` if there is no such voice.
    pub fn set_params(&mut self, id: &str, params: SourceParams) -> bool {
        match self.voices.iter_mut().find(|v| v.id == id) {
            Some(voice) => {
                voice.params = params;
                true
            }
            None => false,
        }
    }

    /// The voices' ids.
    pub fn ids(&self) -> Vec<String> {
        self.voices.iter().map(|v| v.id.clone()).collect()
    }

    /// Each voice's smoothed level in the output, dBFS (what a listener hears of it, after distance).
    pub fn levels(&self) -> Vec<(String, f32)> {
        self.voices
            .iter()
            .map(|v| (v.id.clone(), v.level_dbfs))
            .collect()
    }

    /// Fills `out` with interleaved stereo (left, right) at 48 kHz.
    pub fn render(&mut self, out: &mut [f32]) {
        while self.pending.len() < out.len() {
            self.render_block();
        }
        for sample in out.iter_mut() {
            *sample = self.pending.pop_front().unwrap_or(0.0);
        }
    }

    fn render_block(&mut self) {
        self.left.fill(0.0);
        self.right.fill(0.0);
        let hrtf = match self.panning {
            Panning::Hrtf => self.hrtf.clone(),
            Panning::EqualPower => None,
        };
        for voice in &mut self.voices {
            self.input.fill(0.0);
            voice.source.fill(&mut self.input);
            let (local, distance) = self.listener.hear(voice.params.position);
            let gain = if voice.params.muted {
                0.0
            } else {
                voice.params.gain * voice.params.attenuation.gain(distance)
            };
            self.voice_left.fill(0.0);
            self.voice_right.fill(0.0);
            match (&hrtf, voice.renderer.as_mut()) {
                (Some(hrtf), Some(renderer)) if gain > 0.0 => {
                    let moved = voice
                        .filter_direction
                        .is_none_or(|d| dot(d, local) < 0.9998); // about 1°
                    if moved {
                        let filter = hrtf.filter(local);
                        if renderer.set_filter(&filter).is_ok() {
                            voice.filter_direction = Some(local);
                        }
                    }
                    for s in self.input.iter_mut() {
                        *s *= gain;
                    }
                    let _ = renderer.process_block(
                        &self.input,
                        &mut self.voice_left,
                        &mut self.voice_right,
                    );
                }
                _ => {
                    // Equal power, with the gains ramped over the block so moves do not click.
                    let (l, r) = equal_power_gains(local);
                    let target = (l * gain, r * gain);
                    let (from_l, from_r) = voice.gains;
                    let n = BLOCK as f32;
                    for (i, s) in self.input.iter().enumerate() {
                        let t = (i + 1) as f32 / n;
                        self.voice_left[i] = s * (from_l + (target.0 - from_l) * t);
                        self.voice_right[i] = s * (from_r + (target.1 - from_r) * t);
                    }
                    voice.gains = target;
                }
            }
            let energy: f32 = self
                .voice_left
                .iter()
                .zip(&self.voice_right)
                .map(|(l, r)| l * l + r * r)
                .sum();
            let level = 10.0 * (energy / (2.0 * BLOCK as f32)).max(1e-12).log10();
            voice.level_dbfs = if voice.level_dbfs < -100.0 {
                level
            } else {
                0.8 * voice.level_dbfs + 0.2 * level
            };
            for i in 0..BLOCK {
                self.left[i] += self.voice_left[i];
                self.right[i] += self.voice_right[i];
            }
        }
        self.limit();
        for i in 0..BLOCK {
            self.pending.push_back(self.left[i]);
            self.pending.push_back(self.right[i]);
        }
    }

    /// A peak limiter: the gain drops at once to keep the block under the ceiling and recovers
    /// within about 50 ms.
    fn limit(&mut self) {
        let peak = self
            .left
            .iter()
            .chain(&self.right)
            .fold(0.0f32, |m, s| m.max(s.abs()));
        let wanted = if peak * self.limiter_gain > CEILING {
            CEILING / peak
        } else {
            (self.limiter_gain + (1.0 - self.limiter_gain) * 0.2).min(1.0)
        };
        let from = self.limiter_gain;
        let to = if peak > 0.0 {
            wanted.min(CEILING / peak).min(1.0)
        } else {
            wanted
        };
        for i in 0..BLOCK {
            // Attack within the block, never above the ceiling.
            let g = if to < from {
                to
            } else {
                from + (to - from) * (i as f32 / BLOCK as f32)
            };
            self.left[i] = (self.left[i] * g).clamp(-1.0, 1.0);
            self.right[i] = (self.right[i] * g).clamp(-1.0, 1.0);
        }
        self.limiter_gain = to;
    }
}

impl StereoSource for SpatialMixer {
    fn fill_stereo(&mut self, out: &mut [f32]) {
        self.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::source::ToneSource;

    /// The bundled MIT KEMAR set.
    fn kemar() -> Arc<Hrtf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/hrtf/mit_kemar_normal_pinna.sofa");
        Arc::new(Hrtf::load(&path).unwrap())
    }

    /// White noise from a fixed seed.
    struct Noise(u64);
    impl AudioSource for Noise {
        fn fill(&mut self, out: &mut [f32]) {
            for s in out {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *s = ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5;
            }
        }
    }

    fn render(mixer: &mut SpatialMixer, frames: usize) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0.0; frames * 2];
        mixer.render(&mut out);
        let left = out.iter().step_by(2).copied().collect();
        let right = out.iter().skip(1).step_by(2).copied().collect();
        (left, right)
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt()
    }

    /// The lag (in samples) at which `right` best matches `left`: positive when the right ear leads.
    fn lead_of_right(left: &[f32], right: &[f32], max_lag: usize) -> i64 {
        let mut best = (f32::MIN, 0i64);
        for lag in -(max_lag as i64)..=max_lag as i64 {
            let mut sum = 0.0;
            for i in max_lag..left.len() - max_lag {
                sum += right[i] * left[(i as i64 + lag) as usize];
            }
            if sum > best.0 {
                best = (sum, lag);
            }
        }
        best.1
    }

    #[test]
    fn distance_models_follow_webaudio() {
        let inverse = Attenuation::default();
        assert_eq!(inverse.gain(0.5), 1.0);
        assert!((inverse.gain(2.0) - 0.5).abs() < 1e-6);
        assert!((inverse.gain(10.0) - 0.1).abs() < 1e-6);
        let linear = Attenuation {
            model: DistanceModel::Linear,
            ref_distance: 1.0,
            max_distance: 11.0,
            rolloff: 1.0,
        };
        assert!((linear.gain(6.0) - 0.5).abs() < 1e-6);
        assert_eq!(linear.gain(20.0), 0.0);
        let exponential = Attenuation {
            model: DistanceModel::Exponential,
            rolloff: 2.0,
            ..Attenuation::default()
        };
        assert!((exponential.gain(4.0) - 1.0 / 16.0).abs() < 1e-6);
    }

    #[test]
    fn equal_power_pans_right_and_left_and_keeps_power() {
        let (l, r) = equal_power_gains([1.0, 0.0, 0.0]);
        assert!(l.abs() < 1e-6 && (r - 1.0).abs() < 1e-6);
        let (l, r) = equal_power_gains([0.0, 0.0, 1.0]);
        assert!((l - r).abs() < 1e-6 && (l * l + r * r - 1.0).abs() < 1e-5);
        let (l, r) = equal_power_gains([-0.7, 0.0, -0.7]); // behind, to the left
        assert!(l > r);
    }

    #[test]
    fn a_source_to_the_right_is_louder_and_earlier_in_the_right_ear_with_hrtf() {
        let mut mixer = SpatialMixer::new(Some(kemar()));
        // Bevy's default listener looks along −Z; +X is to its right.
        let params = SourceParams {
            position: [2.0, 0.0, 0.0],
            ..SourceParams::default()
        };
        mixer.add("voice", Box::new(Noise(0x9e3779b97f4a7c15)), params);
        render(&mut mixer, 4 * BLOCK); // let the filter settle
        let (left, right) = render(&mut mixer, 20 * BLOCK);
        assert!(
            rms(&right) > 2.0 * rms(&left),
            "{} vs {}",
            rms(&right),
            rms(&left)
        );
        let lead = lead_of_right(&left, &right, 60);
        // KEMAR's interaural time difference at 90°: about 0.6 ms (29 samples at 48 kHz).
        let ms = lead as f32 / 48.0;
        println!("interaural time difference at 90° right: {ms:.3} ms ({lead} samples)");
        assert!(
            (0.45..=0.8).contains(&ms),
            "the right ear leads by {ms:.2} ms"
        );
    }

    #[test]
    fn equal_power_fallback_and_distance_attenuation_in_the_mix() {
        let mut mixer = SpatialMixer::new(None);
        mixer.add(
            "near",
            Box::new(ToneSource::new(440.0, 0.5)),
            SourceParams {
                position: [-1.0, 0.0, 0.0],
                ..SourceParams::default()
            },
        );
        let (left, right) = render(&mut mixer, 10 * BLOCK);
        assert!(rms(&left) > 10.0 * rms(&right).max(1e-6), "to the left");
        let near = rms(&left);
        mixer.set_params(
            "near",
            SourceParams {
                position: [-4.0, 0.0, 0.0],
                ..SourceParams::default()
            },
        );
        render(&mut mixer, 2 * BLOCK);
        let (left, _) = render(&mut mixer, 10 * BLOCK);
        // Inverse model, ref 1: 4 m is a quarter of the gain (−12 dB).
        let ratio = rms(&left) / near;
        assert!((ratio - 0.25).abs() < 0.02, "{ratio}");
        let levels = mixer.levels();
        assert!(levels[0].1 < -10.0 && levels[0].1 > -30.0, "{levels:?}");
    }

    #[test]
    fn the_limiter_keeps_many_loud_voices_under_full_scale() {
        let mut mixer = SpatialMixer::new(None);
        for i in 0..8 {
            mixer.add(
                format!("v{i}"),
                Box::new(ToneSource::new(200.0 + 50.0 * i as f64, 0.9)),
                SourceParams::default(),
            );
        }
        let (left, right) = render(&mut mixer, 20 * BLOCK);
        let peak = left
            .iter()
            .chain(&right)
            .fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak <= CEILING + 1e-4, "{peak}");
        assert!(rms(&left) > 0.2);
    }
}
