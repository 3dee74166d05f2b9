//! [`Mixer`]: remote voices summed into one mono 48 kHz signal where the output pulls it. It takes
//! the voices engines hand over from its [`VoiceInbox`] and lets ended ones go, each pull, without
//! blocking or allocating; volume and mute are each voice's own (set through its engine).
use crate::audio::handoff::{HandedVoice, MAX_VOICES, VoiceInbox, exchange_voices};
use crate::audio::source::AudioSource;
use crate::clock::wall_us_now;
use streams_proto::TrackId;

/// The longest piece the mixer renders at once (longer pulls are done in pieces).
const PIECE: usize = 960;

/// Sums remote voices into one mono 48 kHz signal.
pub struct Mixer {
    inbox: VoiceInbox,
    // Boxed: voices move between the lock-free queues and here as pointers, never copied.
    #[allow(clippy::vec_box)]
    voices: Vec<Box<HandedVoice>>,
    scratch: Vec<f32>,
}

impl Mixer {
    /// A mixer of the voices handed to `inbox`'s output.
    pub fn new(inbox: VoiceInbox) -> Self {
        Mixer {
            inbox,
            voices: Vec::with_capacity(MAX_VOICES),
            scratch: vec![0.0; PIECE],
        }
    }

    /// The tracks mixed now.
    pub fn track_ids(&self) -> impl Iterator<Item = TrackId> {
        self.voices.iter().map(|v| v.track_id)
    }

    /// Takes voices handed over and lets ended ones go.
    fn refresh(&mut self) {
        let inbox = &self.inbox;
        exchange_voices(
            &mut self.voices,
            |voice| voice.playout.is_closed(),
            |voice| inbox.retire(voice),
            || inbox.take(),
        );
    }

    /// Fills `out` with the mix as it plays at `now_us` (wall clock, µs).
    pub fn pull_at(&mut self, now_us: u64, out: &mut [f32]) {
        self.refresh();
        for piece in out.chunks_mut(PIECE) {
            piece.fill(0.0);
            let scratch = &mut self.scratch[..piece.len()];
            for voice in &mut self.voices {
                if voice.playout.is_closed() {
                    continue;
                }
                voice.playout.pull_at(now_us, scratch);
                for (o, s) in piece.iter_mut().zip(scratch.iter()) {
                    *o += s;
                }
            }
            for o in piece.iter_mut() {
                *o = o.clamp(-1.0, 1.0);
            }
        }
    }
}

impl AudioSource for Mixer {
    fn fill(&mut self, out: &mut [f32]) {
        self.pull_at(wall_us_now(), out);
    }
}
