//! Positional voice in the ECS. Remote voices are mixed on the audio output thread by a
//! [`SpatialMixer`] (HRTF or equal power, distance attenuation, limiter); Bevy only publishes poses:
//! after transform propagation, [`StreamsSystems::Poses`](crate::StreamsSystems::Poses) hands the
//! [`StreamListener`]'s pose and each voice's position to the mixer: the remote track entity's own
//! `GlobalTransform` if it has one (parent it to any entity), else its participant's, else the
//! listener's. Proximity: a voice farther than
//! the attenuation's `max_distance` × [`UNSUBSCRIBE_FACTOR`] is unsubscribed at the bridge (the
//! participant gets [`OutOfEarshot`]) and subscribed again once within `max_distance`.
use std::sync::{Arc, Mutex};

use bevy::prelude::*;
use streams_client::audio::device::StereoPlayback;
use streams_client::audio::source::AudioSource;
use streams_client::audio::spatial::{Attenuation, Pose, SourceParams, SpatialMixer};
use streams_client::media::events::MediaCommand;

use crate::media::RoomMediaLink;
use crate::rooms::{Participant, ParticipantOf, RoomIndex, StreamRoom};
use crate::tracks::{RemoteTrack, RemoteVoice, TrackOf};

/// A voice is unsubscribed beyond this multiple of the maximum distance (and subscribed again within
/// the maximum distance), so one standing at the edge does not flap.
pub const UNSUBSCRIBE_FACTOR: f32 = 1.2;

/// Marks the entity whose ears the mix is for (the camera or the player).
#[derive(Component, Debug, Clone, Copy, Default)]
pub struct StreamListener;

/// Volume and mute of a voice: on a participant (all their audio tracks) or on one remote track.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct VoiceVolume {
    /// Linear gain.
    pub gain: f32,
    /// Muted (still received, not heard).
    pub muted: bool,
}

impl Default for VoiceVolume {
    fn default() -> Self {
        VoiceVolume {
            gain: 1.0,
            muted: false,
        }
    }
}

/// On a participant whose voice is unsubscribed because it is too far away.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfEarshot;

/// The positional mix and its output.
#[derive(Resource, Clone)]
pub struct SpatialAudio {
    mixer: Arc<Mutex<SpatialMixer>>,
    _playback: Option<Arc<StereoPlayback>>,
    /// How voices fade with distance (and where proximity cuts them off).
    pub attenuation: Attenuation,
    /// Every remote voice silenced (deafen).
    pub deafened: bool,
}

impl SpatialAudio {
    pub(crate) fn new(mixer: SpatialMixer, output: bool, attenuation: Attenuation) -> Self {
        let mixer = Arc::new(Mutex::new(mixer));
        let playback = output.then(|| {
            let shared: streams_client::audio::device::SharedStereo = mixer.clone();
            let playback = StereoPlayback::start(shared);
            match playback.device() {
                Some(device) => info!("positional voice plays on {device}"),
                None => info!("no audio output device: positional voice goes to a null sink"),
            }
            Arc::new(playback)
        });
        SpatialAudio {
            mixer,
            _playback: playback,
            attenuation,
            deafened: false,
        }
    }

    /// The mixer (what the output thread pulls; tests and tools may render from it directly when
    /// the plugin runs without an output).
    pub fn mixer(&self) -> Arc<Mutex<SpatialMixer>> {
        Arc::clone(&self.mixer)
    }

    /// The output device the mix plays on (`None`: no output, or a null sink for want of a device).
    pub fn output_device(&self) -> Option<String> {
        self._playback
            .as_ref()
            .and_then(|p| p.device().map(str::to_string))
    }

    /// Each voice's level in the mix, dBFS, by track id.
    pub fn levels(&self) -> Vec<(String, f32)> {
        self.mixer.lock().map(|m| m.levels()).unwrap_or_default()
    }

    pub(crate) fn add_voice(&self, track_id: &str, source: Box<dyn AudioSource>) {
        if let Ok(mut mixer) = self.mixer.lock() {
            mixer.add(
                track_id,
                source,
                SourceParams {
                    attenuation: self.attenuation,
                    ..SourceParams::default()
                },
            );
        }
    }

    pub(crate) fn remove_voice(&self, track_id: &str) {
        if let Ok(mut mixer) = self.mixer.lock() {
            mixer.remove(track_id);
        }
    }
}

fn pose(transform: &GlobalTransform) -> Pose {
    let t = transform.compute_transform();
    Pose {
        position: t.translation.to_array(),
        forward: t.forward().to_array(),
        up: t.up().to_array(),
    }
}

/// Hands the listener's pose and every voice's position to the mixer.
#[allow(clippy::type_complexity)]
pub(crate) fn publish_poses(
    spatial: Option<Res<SpatialAudio>>,
    listeners: Query<&GlobalTransform, With<StreamListener>>,
    voices: Query<
        (
            &RemoteTrack,
            &TrackOf,
            Option<&GlobalTransform>,
            Option<&VoiceVolume>,
        ),
        With<RemoteVoice>,
    >,
    rooms: Query<&StreamRoom>,
    participants: Query<(Option<&GlobalTransform>, Option<&VoiceVolume>)>,
    index: Res<RoomIndex>,
) {
    let Some(spatial) = spatial else { return };
    let listener = listeners.iter().next().map(pose).unwrap_or_default();
    let updates: Vec<(String, SourceParams)> = voices
        .iter()
        .map(|(track, of, own_transform, own_volume)| {
            let participant = rooms
                .get(of.0)
                .ok()
                .and_then(|room| index.participant(&room.id, &track.user_id))
                .and_then(|p| participants.get(p).ok());
            let (participant_transform, participant_volume) = participant.unzip();
            // The track's own pose and volume win over its participant's.
            let position = own_transform
                .or(participant_transform.flatten())
                .map_or(listener.position, |t| t.translation().to_array());
            let volume = own_volume
                .or(participant_volume.flatten())
                .copied()
                .unwrap_or_default();
            (
                track.track_id.clone(),
                SourceParams {
                    position,
                    attenuation: spatial.attenuation,
                    gain: volume.gain,
                    muted: volume.muted || spatial.deafened,
                },
            )
        })
        .collect();
    if let Ok(mut mixer) = spatial.mixer.lock() {
        mixer.set_listener(listener);
        for (id, params) in updates {
            mixer.set_params(&id, params);
        }
    }
}

/// Unsubscribes the voices of participants out of earshot and subscribes them again when near.
pub(crate) fn proximity(
    mut commands: Commands,
    spatial: Option<Res<SpatialAudio>>,
    listeners: Query<&GlobalTransform, With<StreamListener>>,
    participants: Query<(
        Entity,
        &Participant,
        &ParticipantOf,
        &GlobalTransform,
        Has<OutOfEarshot>,
    )>,
    links: Query<&RoomMediaLink>,
) {
    let (Some(spatial), Some(listener)) = (spatial, listeners.iter().next()) else {
        return;
    };
    let max = spatial.attenuation.max_distance;
    let here = listener.translation();
    for (entity, participant, of, transform, far) in &participants {
        if participant.is_local {
            continue;
        }
        let Ok(link) = links.get(of.0) else { continue };
        let distance = transform.translation().distance(here);
        if !far && distance > max * UNSUBSCRIBE_FACTOR {
            if link.send(MediaCommand::SetVoiceSubscribed {
                user_id: participant.user_id.clone(),
                subscribed: false,
            }) {
                commands.entity(entity).insert(OutOfEarshot);
            }
        } else if far
            && distance <= max
            && link.send(MediaCommand::SetVoiceSubscribed {
                user_id: participant.user_id.clone(),
                subscribed: true,
            })
        {
            commands.entity(entity).remove::<OutOfEarshot>();
        }
    }
}
