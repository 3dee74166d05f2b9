//! [`SpatialScene`]: the control half of positional voice, on whatever thread moves things (the
//! game's). It knows the listener and every voice's position and loudness, turns them into each
//! voice's placement (gain, panning, the HRTF filter for its direction, prepared here because that
//! allocates) and publishes it to the [`SpatialMixer`]; it sends the mixer new voices, takes the
//! voices engines hand over, and frees the voices the mixer gives back.
use std::sync::Arc;

use sofar::render::FilterPublisher;

use super::geometry::dot;
use super::hrtf::Hrtf;
use super::render::{Exchange, Placement, Placing, RtVoice, SpatialMixer};
use super::{Attenuation, Panning, Pose, Vec3, equal_power_gains};
use crate::audio::handoff::VoiceInbox;
use crate::audio::playout::VoiceLink;
use crate::audio::source::AudioSource;
use streams_proto::TrackId;

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

struct SceneVoice {
    id: TrackId,
    params: SourceParams,
    placement: Arc<Placement>,
    publisher: Option<FilterPublisher>,
    /// The direction the published HRTF filter is for.
    filter_direction: Option<Vec3>,
    /// For a voice an engine handed over: its link, which says when the track ended.
    link: Option<Arc<VoiceLink>>,
}

/// Where the listener and the voices are (see the [module](super) for the two halves).
pub struct SpatialScene {
    hrtf: Option<Arc<Hrtf>>,
    panning: Panning,
    listener: Pose,
    exchange: Arc<Exchange>,
    voices: Vec<SceneVoice>,
    /// Voices the mixer has not taken yet (it plays [`crate::audio::handoff::MAX_VOICES`]).
    // Boxed: voices move between the lock-free queues and here as pointers, never copied.
    #[allow(clippy::vec_box)]
    waiting: Vec<Box<RtVoice>>,
}

impl SpatialScene {
    /// A scene and the mixer that renders it; `hrtf` enables HRTF panning (equal power without it).
    pub fn new(hrtf: Option<Arc<Hrtf>>) -> (SpatialScene, SpatialMixer) {
        let exchange = Exchange::new();
        let scene = SpatialScene {
            hrtf,
            panning: Panning::Hrtf,
            listener: Pose::default(),
            exchange: Arc::clone(&exchange),
            voices: Vec::new(),
            waiting: Vec::new(),
        };
        (scene, SpatialMixer::new(exchange))
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
    pub fn add(&mut self, id: TrackId, source: Box<dyn AudioSource>, params: SourceParams) {
        self.add_voice(id, source, params, None);
    }

    fn add_voice(
        &mut self,
        id: TrackId,
        source: Box<dyn AudioSource>,
        params: SourceParams,
        link: Option<Arc<VoiceLink>>,
    ) {
        self.remove(id);
        let (publisher, renderer) = self.hrtf.as_ref().and_then(|h| h.renderer()).unzip();
        let placement = Placement::new();
        self.voices.push(SceneVoice {
            id,
            params,
            placement: Arc::clone(&placement),
            publisher,
            filter_direction: None,
            link,
        });
        let last = self.voices.len() - 1;
        let placing = self.place(last);
        self.waiting.push(Box::new(RtVoice {
            source,
            renderer,
            placement,
            placing,
            gains: (0.0, 0.0),
            level_dbfs: -120.0,
        }));
        self.send_waiting();
    }

    /// Removes a voice (the mixer lets it go at its next block).
    pub fn remove(&mut self, id: TrackId) {
        self.voices.retain(|v| {
            let keep = v.id != id;
            if !keep {
                v.placement.remove();
            }
            keep
        });
    }

    /// Updates a voice's position and loudness; `false` if there is no such voice.
    pub fn set_params(&mut self, id: TrackId, params: SourceParams) -> bool {
        match self.voices.iter_mut().find(|v| v.id == id) {
            Some(voice) => {
                voice.params = params;
                true
            }
            None => false,
        }
    }

    /// The voices' ids.
    pub fn ids(&self) -> Vec<TrackId> {
        self.voices.iter().map(|v| v.id).collect()
    }

    /// Each voice's smoothed level in the output, dBFS (what a listener hears of it, after distance).
    pub fn levels(&self) -> Vec<(TrackId, f32)> {
        self.voices
            .iter()
            .map(|v| (v.id, v.placement.level_dbfs()))
            .collect()
    }

    /// Takes the voices engines handed to `inbox`'s output, named by their track id and placed with
    /// `params` until told otherwise.
    pub fn adopt(&mut self, inbox: &VoiceInbox, params: SourceParams) {
        while let Some(voice) = inbox.take() {
            let link = Arc::clone(voice.playout.link());
            let id = voice.track_id;
            self.add_voice(id, voice, params, Some(link));
        }
    }

    /// Publishes every voice's placement for the current poses (call once per game frame, after
    /// moving things), lets go of voices whose track ended and frees what the mixer gave back.
    pub fn update(&mut self) {
        let ended: Vec<TrackId> = self
            .voices
            .iter()
            .filter(|v| v.link.as_ref().is_some_and(|l| l.is_closed()))
            .map(|v| v.id)
            .collect();
        for id in ended {
            self.remove(id);
        }
        for i in 0..self.voices.len() {
            let placing = self.place(i);
            self.voices[i].placement.publish(placing);
        }
        while self.exchange.retired.pop().is_some() {}
        self.send_waiting();
    }

    /// How voice `i` is heard now; publishes a new HRTF filter when it moved by more than about 1°.
    fn place(&mut self, i: usize) -> Placing {
        let voice = &mut self.voices[i];
        let (local, distance) = self.listener.hear(voice.params.position);
        let gain = if voice.params.muted {
            0.0
        } else {
            voice.params.gain * voice.params.attenuation.gain(distance)
        };
        let mut hrtf = false;
        if self.panning == Panning::Hrtf
            && let (Some(set), Some(publisher)) = (&self.hrtf, voice.publisher.as_mut())
        {
            let moved = voice
                .filter_direction
                .is_none_or(|d| dot(d, local) < 0.9998);
            if moved && publisher.publish_filter(&set.filter(local)).is_ok() {
                voice.filter_direction = Some(local);
            } else {
                publisher.reclaim();
            }
            hrtf = voice.filter_direction.is_some();
        }
        Placing {
            gain,
            pan: equal_power_gains(local),
            hrtf,
        }
    }

    fn send_waiting(&mut self) {
        while !self.waiting.is_empty() {
            let voice = self.waiting.remove(0);
            if let Err(voice) = self.exchange.incoming.push(voice) {
                self.waiting.insert(0, voice);
                break;
            }
        }
    }
}
