//! [`Mixer`]: the pull side of remote audio. The output device's thread (or a null sink) calls
//! [`AudioSource::fill`]; each remote track's [`VoiceReceiver`] yields exactly the samples asked for,
//! scaled by its volume (or silenced when muted), and the tracks are summed and clipped.
use std::sync::{Arc, Mutex};

use crate::audio::source::AudioSource;
use crate::clock::wall_us_now;
use crate::media::voice::VoiceReceiver;

/// One remote track's receiver as a mono source, pulled in real time (for a positional mix, which
/// places each track on its own).
pub struct ReceiverSource(pub Arc<Mutex<VoiceReceiver>>);

impl AudioSource for ReceiverSource {
    fn fill(&mut self, out: &mut [f32]) {
        match self.0.lock() {
            Ok(mut receiver) => {
                let pcm = receiver.pull_samples(wall_us_now(), out.len());
                out.copy_from_slice(&pcm[..out.len()]);
            }
            Err(_) => out.fill(0.0),
        }
    }
}

/// A remote track as the mixer holds it.
pub struct MixTrack {
    /// The track id.
    pub track_id: String,
    /// Its receiver (shared with the network side, which feeds it frames).
    pub receiver: Arc<Mutex<VoiceReceiver>>,
    /// Linear gain.
    pub gain: f32,
    /// Whether it is muted (still pulled, so its buffer and speaking state stay current).
    pub muted: bool,
}

/// Sums remote tracks into one mono 48 kHz signal.
#[derive(Default)]
pub struct Mixer {
    tracks: Vec<MixTrack>,
    scratch: Vec<f32>,
}

impl Mixer {
    /// Adds a track at unit gain.
    pub fn add(&mut self, track_id: String, receiver: Arc<Mutex<VoiceReceiver>>) {
        self.tracks.push(MixTrack {
            track_id,
            receiver,
            gain: 1.0,
            muted: false,
        });
    }

    /// Removes a track.
    pub fn remove(&mut self, track_id: &str) {
        self.tracks.retain(|t| t.track_id != track_id);
    }

    /// Sets a track's gain and mute state; `false` if there is no such track.
    pub fn set(&mut self, track_id: &str, gain: f32, muted: bool) -> bool {
        match self.tracks.iter_mut().find(|t| t.track_id == track_id) {
            Some(t) => {
                t.gain = gain.max(0.0);
                t.muted = muted;
                true
            }
            None => false,
        }
    }

    /// The receiver of a track (to pull it on its own, e.g. for per-track analysis).
    pub fn receiver(&self, track_id: &str) -> Option<Arc<Mutex<VoiceReceiver>>> {
        self.tracks
            .iter()
            .find(|t| t.track_id == track_id)
            .map(|t| Arc::clone(&t.receiver))
    }

    /// The track ids mixed now.
    pub fn track_ids(&self) -> Vec<String> {
        self.tracks.iter().map(|t| t.track_id.clone()).collect()
    }
}

impl AudioSource for Mixer {
    fn fill(&mut self, out: &mut [f32]) {
        out.fill(0.0);
        let now = wall_us_now();
        for track in &self.tracks {
            let pcm = match track.receiver.lock() {
                Ok(mut r) => r.pull_samples(now, out.len()),
                Err(_) => continue,
            };
            self.scratch.clear();
            self.scratch.extend(pcm);
            if track.muted {
                continue;
            }
            for (o, s) in out.iter_mut().zip(&self.scratch) {
                *o += s * track.gain;
            }
        }
        for o in out.iter_mut() {
            *o = o.clamp(-1.0, 1.0);
        }
    }
}
