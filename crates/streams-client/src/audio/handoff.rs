//! How remote voices reach what plays them. A media engine hands each new remote voice's
//! [`VoicePlayout`] to a [`VoiceOutput`] (any number of engines may share one); the output side — a
//! [`Mixer`](crate::audio::mixer::Mixer) on the audio thread, or a positional scene — takes them from
//! the matching [`VoiceInbox`] and gives back the ones whose voice ended, to be freed off the audio
//! thread. Both directions are bounded lock-free queues (`crossbeam-queue`), so neither side ever
//! waits for the other or allocates in the audio callback.
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::audio::playout::VoicePlayout;
use crate::audio::source::AudioSource;
use streams_proto::TrackId;

/// Most voices one output plays at once; more wait their turn in the hand-off.
pub const MAX_VOICES: usize = 64;

/// A voice as it is handed over: the track it plays and its playout.
pub struct HandedVoice {
    /// The remote track it plays.
    pub track_id: TrackId,
    /// The playout to pull.
    pub playout: VoicePlayout,
}

/// The hand-off was full: the output side is not taking voices.
#[derive(Debug, thiserror::Error)]
#[error("the voice output is not taking voices ({MAX_VOICES} are waiting)")]
pub struct OutputFull;

struct Shared {
    arriving: ArrayQueue<Box<HandedVoice>>,
    retired: ArrayQueue<Box<HandedVoice>>,
}

/// The engine side of the hand-off (cheap to clone; one per output, shared by every room's engine).
#[derive(Clone)]
pub struct VoiceOutput(Arc<Shared>);

/// The playing side of the hand-off.
pub struct VoiceInbox(Arc<Shared>);

impl VoiceOutput {
    /// A hand-off: its engine side and its playing side.
    pub fn new() -> (VoiceOutput, VoiceInbox) {
        let shared = Arc::new(Shared {
            arriving: ArrayQueue::new(MAX_VOICES),
            retired: ArrayQueue::new(2 * MAX_VOICES),
        });
        (VoiceOutput(Arc::clone(&shared)), VoiceInbox(shared))
    }

    /// Hands a voice to the output side.
    pub fn hand_over(&self, track_id: TrackId, playout: VoicePlayout) -> Result<(), OutputFull> {
        self.collect_retired();
        let voice = Box::new(HandedVoice { track_id, playout });
        self.0.arriving.push(voice).map_err(|_| OutputFull)
    }

    /// Frees the voices the output side let go (here, off the audio thread); how many.
    pub fn collect_retired(&self) -> usize {
        let mut freed = 0;
        while self.0.retired.pop().is_some() {
            freed += 1;
        }
        freed
    }
}

impl VoiceInbox {
    /// The next voice handed over, if any.
    pub fn take(&self) -> Option<Box<HandedVoice>> {
        self.0.arriving.pop()
    }

    /// Gives an ended voice back to be freed by the engine side; handed back again if that queue is
    /// full (keep it and try later: freeing it here might be on the audio thread).
    pub fn retire(&self, voice: Box<HandedVoice>) -> Result<(), Box<HandedVoice>> {
        self.0.retired.push(voice)
    }
}

/// One output-side turn of a hand-off, shared by the mono mixer and the spatial renderer: the voices
/// that `ended` are given back through `retire` (one it cannot take stays, silent, until there is
/// room: nothing is freed on the audio thread), then voices arriving from `take` join, up to
/// [`MAX_VOICES`]. `voices` is allocated with room for [`MAX_VOICES`], so this never allocates.
pub fn exchange_voices<T>(
    voices: &mut Vec<T>,
    ended: impl Fn(&T) -> bool,
    mut retire: impl FnMut(T) -> Result<(), T>,
    mut take: impl FnMut() -> Option<T>,
) {
    let mut i = 0;
    while i < voices.len() {
        if ended(&voices[i]) {
            let voice = voices.swap_remove(i);
            if let Err(voice) = retire(voice) {
                voices.push(voice);
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    while voices.len() < MAX_VOICES {
        match take() {
            Some(voice) => voices.push(voice),
            None => break,
        }
    }
}

impl AudioSource for HandedVoice {
    fn fill(&mut self, out: &mut [f32]) {
        self.playout.fill(out);
    }
}
