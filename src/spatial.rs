//! Positional voice in the ECS. Each room's media engine hands its remote voices to the
//! [`SpatialAudio`] output; they are mixed on the audio output thread by a [`SpatialMixer`] (HRTF or
//! equal power, distance attenuation, limiter), which Bevy never locks: after transform propagation,
//! [`StreamsSystems::Poses`](crate::StreamsSystems::Poses) takes the voices handed over into the
//! [`SpatialScene`] and publishes the [`StreamListener`]'s pose and each voice's position: the remote track entity's own
//! `GlobalTransform` if it has one (parent it to any entity), else its participant's, else the
//! listener's. Proximity: a voice farther than
//! the attenuation's `max_distance` × [`UNSUBSCRIBE_FACTOR`] is unsubscribed at the bridge (the
//! participant gets [`OutOfEarshot`]) and subscribed again once within `max_distance`.
use std::sync::{Arc, Mutex};

use bevy::prelude::*;
use streams_client::audio::handoff::{VoiceInbox, VoiceOutput};
use streams_client::audio::output::StereoPlayback;
use streams_client::audio::spatial::{
    Attenuation, Hrtf, Pose, SourceParams, SpatialMixer, SpatialScene,
};
use streams_client::media::events::MediaCommand;

use crate::media_link::RoomMediaLink;
use crate::rooms::{Participant, ParticipantOf, RoomIndex, StreamRoom};
use crate::tracks::{RemoteTrack, RemoteVoice, TrackOf};
use streams_proto::TrackId;

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

/// The positional mix and its output. The mix itself runs on the output thread; this resource
/// holds its scene (poses, placements, HRTF filters), which only the game's systems touch.
#[derive(Resource, Clone)]
pub struct SpatialAudio {
    scene: Arc<Mutex<SpatialScene>>,
    voice_output: VoiceOutput,
    inbox: Arc<VoiceInbox>,
    /// The mixer when no output plays it (rendered by [`SpatialAudio::render`]).
    offline: Option<Arc<Mutex<SpatialMixer>>>,
    _playback: Option<Arc<StereoPlayback>>,
    /// How voices fade with distance (and where proximity cuts them off).
    pub attenuation: Attenuation,
    /// Every remote voice silenced (deafen).
    pub deafened: bool,
}

impl SpatialAudio {
    pub(crate) fn new(hrtf: Option<Arc<Hrtf>>, output: bool, attenuation: Attenuation) -> Self {
        let (scene, mixer) = SpatialScene::new(hrtf);
        let (voice_output, inbox) = VoiceOutput::new();
        let (playback, offline) = if output {
            let playback = StereoPlayback::start(Box::new(mixer));
            match playback.device() {
                Some(device) => info!("positional voice plays on {device}"),
                None => info!("no audio output device: positional voice goes to a null sink"),
            }
            (Some(Arc::new(playback)), None)
        } else {
            (None, Some(Arc::new(Mutex::new(mixer))))
        };
        SpatialAudio {
            scene: Arc::new(Mutex::new(scene)),
            voice_output,
            inbox: Arc::new(inbox),
            offline,
            _playback: playback,
            attenuation,
            deafened: false,
        }
    }

    /// Where rooms' media engines hand their remote voices (each room joined plays here).
    pub fn voice_output(&self) -> VoiceOutput {
        self.voice_output.clone()
    }

    /// The positional scene: a game may add voices of its own (placed like remote ones).
    pub fn scene(&self) -> Arc<Mutex<SpatialScene>> {
        Arc::clone(&self.scene)
    }

    /// Renders the next `out.len() / 2` stereo frames of the mix here, when the plugin runs without
    /// an output (tests, tools); `false` when a device or null sink plays it.
    pub fn render(&self, out: &mut [f32]) -> bool {
        match self.offline.as_ref().and_then(|m| m.lock().ok()) {
            Some(mut mixer) => {
                mixer.render(out);
                true
            }
            None => false,
        }
    }

    /// The output device the mix plays on (`None`: no output, or a null sink for want of a device).
    pub fn output_device(&self) -> Option<String> {
        self._playback
            .as_ref()
            .and_then(|p| p.device().map(str::to_string))
    }

    /// Each voice's level in the mix, dBFS, by track id.
    pub fn levels(&self) -> Vec<(TrackId, f32)> {
        self.scene.lock().map(|s| s.levels()).unwrap_or_default()
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
    let updates: Vec<(TrackId, SourceParams)> = voices
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
                track.track_id,
                SourceParams {
                    position,
                    attenuation: spatial.attenuation,
                    gain: volume.gain,
                    muted: volume.muted || spatial.deafened,
                },
            )
        })
        .collect();
    if let Ok(mut scene) = spatial.scene.lock() {
        scene.adopt(
            &spatial.inbox,
            SourceParams {
                attenuation: spatial.attenuation,
                ..SourceParams::default()
            },
        );
        scene.set_listener(listener);
        for (id, params) in updates {
            scene.set_params(id, params);
        }
        scene.update();
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
