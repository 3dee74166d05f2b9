//! [`SpatialMixer`]: the audio-thread half of positional voice. Each block it takes the voices its
//! scene sent, renders every voice with the placement the scene published last (HRTF through a
//! real-time renderer whose filters the scene prepares, or equal-power gains ramped over the block),
//! sums, limits and hands back the voices the scene removed. It never blocks, allocates or frees.
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_queue::ArrayQueue;
use sofar::render::RealtimeRenderer;

use super::{BLOCK, CEILING};
use crate::audio::handoff::{MAX_VOICES, exchange_voices};
use crate::audio::output::StereoSource;
use crate::audio::source::AudioSource;

/// How one voice is heard now, as the scene last computed it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Placing {
    /// Gain from volume and distance (0 when muted).
    pub(super) gain: f32,
    /// Equal-power (left, right) gains for the voice's direction.
    pub(super) pan: (f32, f32),
    /// Render through the HRTF renderer (its filter for this direction is published).
    pub(super) hrtf: bool,
}

/// What a voice's two halves share.
pub(super) struct Placement {
    latest: ArrayQueue<Placing>,
    /// The voice's smoothed level in the output, dBFS (f32 bits).
    level: AtomicU32,
    removed: AtomicBool,
}

impl Placement {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Placement {
            latest: ArrayQueue::new(1),
            level: AtomicU32::new((-120.0f32).to_bits()),
            removed: AtomicBool::new(false),
        })
    }

    pub(super) fn publish(&self, placing: Placing) {
        self.latest.force_push(placing);
    }

    pub(super) fn level_dbfs(&self) -> f32 {
        f32::from_bits(self.level.load(Ordering::Relaxed))
    }

    pub(super) fn remove(&self) {
        self.removed.store(true, Ordering::Release);
    }
}

/// A voice as the audio thread renders it.
pub(super) struct RtVoice {
    pub(super) source: Box<dyn AudioSource>,
    pub(super) renderer: Option<RealtimeRenderer>,
    pub(super) placement: Arc<Placement>,
    pub(super) placing: Placing,
    /// The equal-power gains reached at the end of the last block.
    pub(super) gains: (f32, f32),
    pub(super) level_dbfs: f32,
}

/// The queues between a scene and its mixer.
pub(super) struct Exchange {
    pub(super) incoming: ArrayQueue<Box<RtVoice>>,
    pub(super) retired: ArrayQueue<Box<RtVoice>>,
}

impl Exchange {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Exchange {
            incoming: ArrayQueue::new(MAX_VOICES),
            retired: ArrayQueue::new(2 * MAX_VOICES),
        })
    }
}

/// Renders mono voices at positions into stereo for one listener (see [`super::SpatialScene`]).
pub struct SpatialMixer {
    exchange: Arc<Exchange>,
    // Boxed: voices move between the lock-free queues and here as pointers, never copied.
    #[allow(clippy::vec_box)]
    voices: Vec<Box<RtVoice>>,
    limiter_gain: f32,
    input: Vec<f32>,
    left: Vec<f32>,
    right: Vec<f32>,
    voice_left: Vec<f32>,
    voice_right: Vec<f32>,
    /// Rendered stereo not handed out yet (interleaved; capacity fixed at creation).
    pending: VecDeque<f32>,
}

impl SpatialMixer {
    pub(super) fn new(exchange: Arc<Exchange>) -> Self {
        SpatialMixer {
            exchange,
            voices: Vec::with_capacity(MAX_VOICES),
            limiter_gain: 1.0,
            input: vec![0.0; BLOCK],
            left: vec![0.0; BLOCK],
            right: vec![0.0; BLOCK],
            voice_left: vec![0.0; BLOCK],
            voice_right: vec![0.0; BLOCK],
            pending: VecDeque::with_capacity(4 * BLOCK),
        }
    }

    /// Fills `out` with interleaved stereo (left, right) at 48 kHz.
    pub fn render(&mut self, out: &mut [f32]) {
        for piece in out.chunks_mut(2 * BLOCK) {
            while self.pending.len() < piece.len() {
                self.render_block();
            }
            let count = piece.len();
            for (o, s) in piece.iter_mut().zip(self.pending.drain(..count)) {
                *o = s;
            }
        }
    }

    /// Takes the voices the scene sent and gives back the ones it removed.
    fn exchange(&mut self) {
        let exchange = &self.exchange;
        exchange_voices(
            &mut self.voices,
            |voice| voice.placement.removed.load(Ordering::Acquire),
            |voice| exchange.retired.push(voice),
            || exchange.incoming.pop(),
        );
    }

    fn render_block(&mut self) {
        self.exchange();
        self.left.fill(0.0);
        self.right.fill(0.0);
        for voice in &mut self.voices {
            if let Some(placing) = voice.placement.latest.pop() {
                voice.placing = placing;
            }
            self.input.fill(0.0);
            voice.source.fill(&mut self.input);
            let placing = voice.placing;
            if voice.placement.removed.load(Ordering::Relaxed) {
                continue;
            }
            self.voice_left.fill(0.0);
            self.voice_right.fill(0.0);
            match voice.renderer.as_mut() {
                Some(renderer) if placing.hrtf && placing.gain > 0.0 => {
                    for s in self.input.iter_mut() {
                        *s *= placing.gain;
                    }
                    let _ = renderer.process_block(
                        &self.input,
                        &mut self.voice_left,
                        &mut self.voice_right,
                    );
                }
                _ => {
                    // Equal power, with the gains ramped over the block so moves do not click.
                    let target = (placing.pan.0 * placing.gain, placing.pan.1 * placing.gain);
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
            voice
                .placement
                .level
                .store(voice.level_dbfs.to_bits(), Ordering::Relaxed);
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
