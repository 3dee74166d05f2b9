//! Room media in the ECS. A room entity joins its media with [`JoinMedia`] (the engine,
//! [`streams_client::media::engine::RoomMedia`], runs on its own thread and is owned by the room's
//! [`RoomMediaLink`]: leaving or despawning the room stops it). Local tracks are published with
//! [`PublishAudio`] / [`PublishVideo`]; remote tracks become [`RemoteTrack`] entities related to their
//! room by [`TrackOf`] — video ones with a [`RemoteVideo`] image written in place, audio ones placed in
//! the positional mix ([`crate::spatial`]). Every engine event is also a [`StreamsMediaEvent`]
//! message; failures are [`StreamsMediaError`] messages, never panics.
use std::path::PathBuf;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::device::MicrophoneSource;
use streams_client::audio::source::{AudioSource, ClipSource, ToneSource};
use streams_client::media::engine::{MediaCommand, MediaEvent, MediaOptions, RoomMedia};
use streams_client::media::mixer::ReceiverSource;
use streams_client::media::voice::TrackStats;
use streams_client::video::VideoSource;
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_client::video::receiver::{VideoSlot, VideoStats};
use streams_client::video::screen::{ScreenSource, ScreenTarget};
use streams_proto::UserId;
use streams_proto::wire::TrackKind;

use crate::commands::ClientResource;
use crate::rooms::{RoomIndex, StreamRoom};
use crate::session::{LocalIdentity, StreamsSession};
use crate::spatial::SpatialAudio;

/// Where a published audio track comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AudioInput {
    /// A sine tone (Hz).
    Tone(f64),
    /// A WAV clip, looped.
    Clip(PathBuf),
    /// A microphone (by name, or the default).
    Microphone(Option<String>),
}

/// Where a published video track comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum VideoInput {
    /// The moving test pattern.
    Pattern {
        /// Width.
        width: usize,
        /// Height.
        height: usize,
        /// Frames per second.
        fps: u32,
    },
    /// The X11 screen (`$DISPLAY`).
    Screen {
        /// Frames per second.
        fps: u32,
    },
    /// A camera.
    Camera {
        /// Its index.
        index: u32,
        /// Frames per second.
        fps: u32,
    },
}

/// Request: join the media of this room entity (receive its tracks, be able to publish).
#[derive(EntityEvent, Clone, Debug)]
pub struct JoinMedia {
    /// The room entity.
    pub entity: Entity,
}

/// Request: leave the media of this room entity (tracks end, remote tracks are despawned).
#[derive(EntityEvent, Clone, Debug)]
pub struct LeaveMedia {
    /// The room entity.
    pub entity: Entity,
}

/// Request: publish an audio track in this room (its media must be joined).
#[derive(EntityEvent, Clone, Debug)]
pub struct PublishAudio {
    /// The room entity.
    pub entity: Entity,
    /// The source.
    pub input: AudioInput,
}

/// Request: publish a video or screen track in this room (its media must be joined).
#[derive(EntityEvent, Clone, Debug)]
pub struct PublishVideo {
    /// The room entity.
    pub entity: Entity,
    /// The source.
    pub input: VideoInput,
}

/// Request: mute (or unmute) this client's microphone and other audio tracks in this room; they
/// keep sending silence. Push-to-talk is this, toggled by a key.
#[derive(EntityEvent, Clone, Debug)]
pub struct MuteMicrophone {
    /// The room entity.
    pub entity: Entity,
    /// Muted.
    pub muted: bool,
}

/// Request: stop (or resume) hearing every remote voice, in every room.
#[derive(Event, Clone, Copy, Debug)]
pub struct Deafen(pub bool);

/// The room's media engine. Removing it (or despawning the room) stops the engine.
#[derive(Component)]
pub struct RoomMediaLink {
    media: RoomMedia,
}

impl RoomMediaLink {
    /// Sends a command to the engine (`false` if it stopped or is flooded).
    pub fn send(&self, command: MediaCommand) -> bool {
        self.media.send(command)
    }
}

/// A remote track being received.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    /// The track id.
    pub track_id: String,
    /// Its sender.
    pub user_id: UserId,
    /// What it carries.
    pub kind: TrackKind,
}

/// The room a remote track belongs to.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[relationship(relationship_target = RoomTracks)]
pub struct TrackOf(pub Entity);

/// The remote tracks of a room (despawned with it).
#[derive(Component, Debug, Default)]
#[relationship_target(relationship = TrackOf, linked_spawn)]
pub struct RoomTracks(Vec<Entity>);

impl RoomTracks {
    /// The track entities.
    pub fn entities(&self) -> &[Entity] {
        &self.0
    }
}

/// A remote video track's picture: an RGBA image written in place as pictures arrive (use the handle
/// on a sprite, a UI image or a material).
#[derive(Component, Debug, Clone)]
pub struct RemoteVideo {
    /// The image.
    pub image: Handle<Image>,
    /// Pictures written into it so far.
    pub frames_shown: u64,
}

/// Where a remote video track's pictures come from.
#[derive(Component)]
pub(crate) struct VideoFeed {
    slot: VideoSlot,
    seen: u64,
}

/// The latest decoded picture of a remote video track (for checks: the test pattern's stamp, …).
#[derive(Component, Debug, Clone, Default)]
pub struct LatestPicture(pub Option<std::sync::Arc<streams_client::video::receiver::DecodedVideo>>);

/// A remote audio track, heard in the positional mix from its participant's position.
#[derive(Component, Debug, Clone, Copy, Default)]
pub struct RemoteVoice;

/// On a participant while it speaks.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaking;

/// Statistics of a remote audio track.
#[derive(Component, Debug, Clone, Default)]
pub struct AudioTrackStats(pub TrackStats);

/// Statistics of a remote video track.
#[derive(Component, Debug, Clone, Default)]
pub struct VideoTrackStats(pub VideoStats);

/// Every event of a room's media engine.
#[derive(Message, Debug, Clone)]
pub struct StreamsMediaEvent {
    /// The room entity.
    pub room: Entity,
    /// What happened.
    pub event: MediaEvent,
}

/// A media request failed.
#[derive(Message, Debug, Clone)]
pub struct StreamsMediaError {
    /// The room entity.
    pub room: Entity,
    /// Why.
    pub error: String,
}

/// Media events applied per room and frame at most.
const MEDIA_EVENTS_PER_FRAME: usize = 256;

pub(crate) fn join_media(
    join: On<JoinMedia>,
    mut commands: Commands,
    rooms: Query<&StreamRoom>,
    client: Option<Res<ClientResource>>,
    identity: Res<LocalIdentity>,
    sessions: Query<&StreamsSession>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let room = join.entity;
    let fail = |errors: &mut MessageWriter<StreamsMediaError>, error: String| {
        warn!("joining media failed: {error}");
        errors.write(StreamsMediaError { room, error });
    };
    let Ok(stream_room) = rooms.get(room) else {
        return fail(&mut errors, "not a room entity".into());
    };
    let (Some(client), Some(session)) = (client, sessions.iter().next()) else {
        return fail(&mut errors, "the streams client is not running".into());
    };
    let handle = match client.client.handle() {
        Ok(h) => h,
        Err(e) => return fail(&mut errors, e.to_string()),
    };
    let options = MediaOptions {
        video_rgba: true,
        video_observer: None,
    };
    match RoomMedia::start_with(
        handle,
        identity.0.clone(),
        &session.bridge_url,
        stream_room.id.clone(),
        options,
    ) {
        Ok(media) => {
            commands.entity(room).insert(RoomMediaLink { media });
        }
        Err(e) => fail(&mut errors, e.to_string()),
    }
}

pub(crate) fn leave_media(
    leave: On<LeaveMedia>,
    mut commands: Commands,
    tracks: Query<&RoomTracks>,
) {
    let room = leave.entity;
    commands.entity(room).remove::<RoomMediaLink>();
    if let Ok(tracks) = tracks.get(room) {
        for track in tracks.entities() {
            commands.entity(*track).despawn();
        }
    }
}

fn audio_source(input: &AudioInput) -> Result<Box<dyn AudioSource>, String> {
    Ok(match input {
        AudioInput::Tone(hz) => Box::new(ToneSource::new(*hz, 0.4)),
        AudioInput::Clip(path) => Box::new(ClipSource::load(path).map_err(|e| e.to_string())?),
        AudioInput::Microphone(name) => {
            Box::new(MicrophoneSource::open(name.as_deref()).map_err(|e| e.to_string())?)
        }
    })
}

fn video_source(input: &VideoInput) -> Result<(Box<dyn VideoSource>, TrackKind), String> {
    Ok(match input {
        VideoInput::Pattern { width, height, fps } => (
            Box::new(PatternSource::new(*width, *height, *fps).map_err(|e| e.to_string())?),
            TrackKind::Video,
        ),
        VideoInput::Screen { fps } => (
            Box::new(
                ScreenSource::open(None, ScreenTarget::Screen, *fps).map_err(|e| e.to_string())?,
            ),
            TrackKind::Screen,
        ),
        #[cfg(feature = "camera")]
        VideoInput::Camera { index, fps } => (
            Box::new(
                streams_client::video::camera::CameraSource::open(*index, 1280, 720, *fps)
                    .map_err(|e| e.to_string())?,
            ),
            TrackKind::Video,
        ),
        #[cfg(not(feature = "camera"))]
        VideoInput::Camera { .. } => return Err("built without camera support".into()),
    })
}

pub(crate) fn mute_microphone(
    mute: On<MuteMicrophone>,
    links: Query<&RoomMediaLink>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let sent = links
        .get(mute.entity)
        .is_ok_and(|link| link.send(MediaCommand::MuteAudio(mute.muted)));
    if !sent {
        errors.write(StreamsMediaError {
            room: mute.entity,
            error: "no media engine for this room".into(),
        });
    }
}

pub(crate) fn deafen(deafen: On<Deafen>, spatial: Option<ResMut<SpatialAudio>>) {
    if let Some(mut spatial) = spatial {
        spatial.deafened = deafen.0;
    }
}

/// Builds a command for a room's engine and sends it; a failure becomes a [`StreamsMediaError`].
fn command_room(
    room: Entity,
    links: &Query<&RoomMediaLink>,
    errors: &mut MessageWriter<StreamsMediaError>,
    what: &str,
    make: impl FnOnce() -> Result<MediaCommand, String>,
) {
    let result = links
        .get(room)
        .map_err(|_| "join the room's media first".to_string())
        .and_then(|link| {
            link.send(make()?)
                .then_some(())
                .ok_or_else(|| "the media engine has stopped".to_string())
        });
    if let Err(error) = result {
        warn!("{what} failed: {error}");
        errors.write(StreamsMediaError { room, error });
    }
}

pub(crate) fn publish_audio(
    publish: On<PublishAudio>,
    links: Query<&RoomMediaLink>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    command_room(
        publish.entity,
        &links,
        &mut errors,
        "publishing audio",
        || {
            Ok(MediaCommand::AddAudioTrack {
                source: audio_source(&publish.input)?,
                settings: VoiceSettings::default(),
            })
        },
    );
}

pub(crate) fn publish_video(
    publish: On<PublishVideo>,
    links: Query<&RoomMediaLink>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    command_room(
        publish.entity,
        &links,
        &mut errors,
        "publishing video",
        || {
            let (source, kind) = video_source(&publish.input)?;
            let (width, height) = source.size();
            let mut settings = VideoSettings::for_picture(width, height, source.frame_rate());
            settings.screen_content = kind == TrackKind::Screen;
            Ok(MediaCommand::AddVideoTrack {
                source,
                settings,
                kind,
            })
        },
    );
}

fn blank_image(width: u32, height: u32) -> Image {
    Image::new_fill(
        Extent3d {
            width: width.max(1),
            height: height.max(1),
            depth_or_array_layers: 1,
        },
        TextureDimension::D2,
        &[0, 0, 0, 255],
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::default(),
    )
}

/// Applies each joined room's media events: remote track entities, speaking markers, statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drain_media_events(
    mut commands: Commands,
    mut links: Query<(Entity, &StreamRoom, &mut RoomMediaLink)>,
    tracks: Query<(Entity, &RemoteTrack, &TrackOf)>,
    index: Res<RoomIndex>,
    spatial: Option<Res<SpatialAudio>>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut messages: MessageWriter<StreamsMediaEvent>,
) {
    for (room, stream_room, link) in &mut links {
        let events: Vec<MediaEvent> = link
            .media
            .events()
            .try_iter()
            .take(MEDIA_EVENTS_PER_FRAME)
            .collect();
        for event in events {
            match &event {
                MediaEvent::RemoteTrackAdded {
                    track_id,
                    user_id,
                    kind,
                } => {
                    let mut track = commands.spawn((
                        RemoteTrack {
                            track_id: track_id.clone(),
                            user_id: user_id.clone(),
                            kind: *kind,
                        },
                        TrackOf(room),
                        Name::new(format!("remote {kind:?} track {track_id}")),
                    ));
                    if *kind == TrackKind::Audio {
                        track.insert((RemoteVoice, AudioTrackStats::default()));
                        let receiver = link
                            .media
                            .mixer()
                            .lock()
                            .ok()
                            .and_then(|m| m.receiver(track_id));
                        if let (Some(spatial), Some(receiver)) = (&spatial, receiver) {
                            spatial.add_voice(track_id, Box::new(ReceiverSource(receiver)));
                        }
                    } else if let Some(slot) = link.media.video(track_id) {
                        let image = images
                            .as_mut()
                            .map(|images| images.add(blank_image(2, 2)))
                            .unwrap_or_default();
                        track.insert((
                            RemoteVideo {
                                image,
                                frames_shown: 0,
                            },
                            VideoFeed { slot, seen: 0 },
                            LatestPicture::default(),
                            VideoTrackStats::default(),
                        ));
                    }
                }
                MediaEvent::RemoteTrackRemoved { track_id } => {
                    for (entity, track, of) in &tracks {
                        if of.0 == room && track.track_id == *track_id {
                            commands.entity(entity).despawn();
                        }
                    }
                    if let Some(spatial) = &spatial {
                        spatial.remove_voice(track_id);
                    }
                }
                MediaEvent::Speaking {
                    user_id, speaking, ..
                } => {
                    if let Some(participant) = index.participant(&stream_room.id, user_id) {
                        if *speaking {
                            commands.entity(participant).insert(Speaking);
                        } else {
                            commands.entity(participant).remove::<Speaking>();
                        }
                    }
                }
                MediaEvent::Stats(stats) => {
                    for (track_id, s) in stats {
                        for (entity, track, of) in &tracks {
                            if of.0 == room && track.track_id == *track_id {
                                commands.entity(entity).insert(AudioTrackStats(s.clone()));
                            }
                        }
                    }
                }
                MediaEvent::VideoStats(stats) => {
                    for (track_id, s) in stats {
                        for (entity, track, of) in &tracks {
                            if of.0 == room && track.track_id == *track_id {
                                commands.entity(entity).insert(VideoTrackStats(s.clone()));
                            }
                        }
                    }
                }
                MediaEvent::Stopped { reason } => {
                    info!("room media stopped: {reason}");
                    commands.entity(room).remove::<RoomMediaLink>();
                }
                _ => {}
            }
            messages.write(StreamsMediaEvent { room, event });
        }
    }
}

/// Writes each remote video track's newest picture into its image, reusing the image's storage.
pub(crate) fn apply_video_frames(
    mut videos: Query<(&mut RemoteVideo, &mut VideoFeed, &mut LatestPicture)>,
    mut images: Option<ResMut<Assets<Image>>>,
) {
    for (mut video, mut feed, mut latest) in &mut videos {
        let Some((version, picture)) = feed.slot.newer_than(feed.seen) else {
            continue;
        };
        feed.seen = version;
        if let (Some(images), Some(rgba)) = (images.as_mut(), picture.rgba.as_ref()) {
            let (width, height) = (
                picture.picture.width() as u32,
                picture.picture.height() as u32,
            );
            if let Some(mut image) = images.get_mut(&video.image) {
                if image.width() != width || image.height() != height {
                    *image = blank_image(width, height);
                }
                match image.data.as_mut() {
                    Some(data) if data.len() == rgba.len() => data.copy_from_slice(rgba),
                    _ => image.data = Some(rgba.clone()),
                }
            }
        }
        video.frames_shown += 1;
        latest.0 = Some(picture);
    }
}
