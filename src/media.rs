//! Room media requests. A room entity joins its media with [`JoinMedia`] (the engine,
//! [`streams_client::media::driver::RoomMedia`], runs on its own thread and is owned by the room's
//! [`RoomMediaLink`]: joining returns at once, with [`crate::MediaConnecting`] on the room until the
//! media is up; leaving or despawning the room stops it without waiting; the engine starts and
//! stops at the end of the frame). Local tracks are published with
//! [`PublishAudio`] / [`PublishVideo`] (each becomes a [`LocalTrack`] entity) and unpublished with
//! [`Unpublish`]; [`SubscribeTracks`] turns receiving on or off, [`MuteMicrophone`] is mute and
//! push-to-talk, [`Deafen`] silences every remote voice. Failures are [`StreamsMediaError`] messages
//! and observer triggers, never panics; every engine event is a [`StreamsMediaEvent`]
//! ([`crate::tracks`] applies them to entities).
use std::sync::Arc;

use bevy::prelude::*;
use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::device::MicrophoneSource;
use streams_client::audio::source::{AudioSource, ClipSource, ToneSource};
use streams_client::media::driver::RoomMedia;
use streams_client::media::events::{MediaCommand, MediaOptions};
use streams_client::video::VideoSource;
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_client::video::preview::PreviewSource;
use streams_client::video::receiver::VideoSlot;
use streams_client::video::screen::{ScreenSource, ScreenTarget};
use streams_proto::wire::TrackKind;

use crate::commands::ClientResource;
use crate::media_link::{MediaLaunches, MediaRequestError, RoomMediaLink, StreamsMediaError};
use crate::media_requests::{
    AudioInput, Deafen, JoinMedia, LeaveMedia, MuteMicrophone, PublishAudio, PublishVideo,
    SubscribeTracks, Unpublish, VideoInput,
};
use crate::media_state::{MediaState, clear_media_state, set_media_state};
use crate::rooms::StreamRoom;
use crate::session::{LocalIdentity, StreamsSession};
use crate::spatial::SpatialAudio;
use crate::tracks::{LocalTrack, LocalTrackOf, RoomLocalTracks, RoomTracks};
use crate::video_texture::{LatestPicture, LocalPreview, VideoFeed, blank_image};

/// Local previews are refreshed at most this often (converting to RGBA costs the capture thread).
const PREVIEW_FPS: u32 = 15;

#[allow(clippy::too_many_arguments)]
pub(crate) fn join_media(
    join: On<JoinMedia>,
    mut commands: Commands,
    rooms: Query<&StreamRoom>,
    client: Option<Res<ClientResource>>,
    identity: Res<LocalIdentity>,
    sessions: Query<&StreamsSession>,
    spatial: Option<Res<SpatialAudio>>,
    mut launches: ResMut<MediaLaunches>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let room = join.entity;
    let fail = |errors: &mut MessageWriter<StreamsMediaError>, error: MediaRequestError| {
        warn!("joining media failed: {error}");
        errors.write(StreamsMediaError { room, error });
    };
    let Ok(stream_room) = rooms.get(room) else {
        return fail(&mut errors, MediaRequestError::NotARoom);
    };
    let (Some(client), Some(session)) = (client, sessions.iter().next()) else {
        return fail(&mut errors, MediaRequestError::NoClient);
    };
    let handle = match client.client.handle() {
        Ok(h) => h,
        Err(e) => return fail(&mut errors, MediaRequestError::Client(Arc::new(e))),
    };
    let options = MediaOptions {
        video_rgba: true,
        video_observer: None,
        voice_output: spatial.map(|s| s.voice_output()),
    };
    match RoomMedia::prepare(
        handle,
        identity.0.clone(),
        &session.bridge_url,
        stream_room.id.clone(),
        options,
    ) {
        Ok((media, engine)) => {
            commands.entity(room).insert(RoomMediaLink::new(media));
            set_media_state(&mut commands, room, MediaState::Connecting);
            launches.launch(room, engine);
        }
        Err(e) => fail(&mut errors, MediaRequestError::Start(Arc::new(e))),
    }
}

pub(crate) fn leave_media(
    leave: On<LeaveMedia>,
    mut commands: Commands,
    remote: Query<&RoomTracks>,
    local: Query<&RoomLocalTracks>,
) {
    let room = leave.entity;
    let Ok(mut entity) = commands.get_entity(room) else {
        return;
    };
    entity.remove::<RoomMediaLink>();
    clear_media_state(&mut commands, room);
    let remote = remote.get(room).map(RoomTracks::entities).unwrap_or(&[]);
    let local = local
        .get(room)
        .map(RoomLocalTracks::entities)
        .unwrap_or(&[]);
    for track in remote.iter().chain(local) {
        commands.entity(*track).despawn();
    }
}

fn audio_source(input: &AudioInput) -> Result<Box<dyn AudioSource>, MediaRequestError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| MediaRequestError::AudioInput(e.into());
    Ok(match input {
        AudioInput::Tone(hz) => Box::new(ToneSource::new(*hz, 0.4)),
        AudioInput::Clip(path) => Box::new(ClipSource::load(path).map_err(|e| failed(e.into()))?),
        AudioInput::Microphone(name) => {
            Box::new(MicrophoneSource::open(name.as_deref()).map_err(|e| failed(e.into()))?)
        }
    })
}

fn video_source(
    input: &VideoInput,
) -> Result<(Box<dyn VideoSource>, TrackKind), MediaRequestError> {
    let failed = |e: streams_client::video::VideoError| MediaRequestError::VideoInput(Arc::new(e));
    Ok(match input {
        VideoInput::Pattern { width, height, fps } => (
            Box::new(PatternSource::new(*width, *height, *fps).map_err(failed)?),
            TrackKind::Video,
        ),
        VideoInput::Screen { fps } => (
            Box::new(ScreenSource::open(None, ScreenTarget::Screen, *fps).map_err(failed)?),
            TrackKind::Screen,
        ),
        #[cfg(feature = "camera")]
        VideoInput::Camera { index, fps } => (
            Box::new(
                streams_client::video::camera::CameraSource::open(*index, 1280, 720, *fps)
                    .map_err(failed)?,
            ),
            TrackKind::Video,
        ),
        #[cfg(not(feature = "camera"))]
        VideoInput::Camera { .. } => return Err(MediaRequestError::NoCameraSupport),
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
            error: MediaRequestError::NotJoined,
        });
    }
}

pub(crate) fn deafen(deafen: On<Deafen>, spatial: Option<ResMut<SpatialAudio>>) {
    if let Some(mut spatial) = spatial {
        spatial.deafened = deafen.0;
    }
}

/// Sends a command to a room's engine; a failure becomes a [`StreamsMediaError`].
fn command_room(
    room: Entity,
    links: &Query<&RoomMediaLink>,
    errors: &mut MessageWriter<StreamsMediaError>,
    what: &str,
    command: MediaCommand,
) -> bool {
    let result = links
        .get(room)
        .map_err(|_| MediaRequestError::NotJoined)
        .and_then(|link| {
            link.send(command)
                .then_some(())
                .ok_or(MediaRequestError::EngineStopped)
        });
    report(room, errors, what, result)
}

/// Reports a failed request as a [`StreamsMediaError`]; `true` when it succeeded.
fn report(
    room: Entity,
    errors: &mut MessageWriter<StreamsMediaError>,
    what: &str,
    result: Result<(), MediaRequestError>,
) -> bool {
    match result {
        Ok(()) => true,
        Err(error) => {
            warn!("{what} failed: {error}");
            errors.write(StreamsMediaError { room, error });
            false
        }
    }
}

/// Adds a local track: the command goes to the room's engine and the track becomes an entity.
fn add_local_track(
    commands: &mut Commands,
    room: Entity,
    links: &mut Query<&mut RoomMediaLink>,
    command: MediaCommand,
    track: (TrackKind, String),
) -> Result<Entity, MediaRequestError> {
    let mut link = links
        .get_mut(room)
        .map_err(|_| MediaRequestError::NotJoined)?;
    if !link.send(command) {
        return Err(MediaRequestError::EngineStopped);
    }
    let index = link.take_local_index();
    let (kind, description) = track;
    Ok(commands
        .spawn((
            LocalTrack {
                index,
                kind,
                description: description.clone(),
                published: false,
            },
            LocalTrackOf(room),
            Name::new(format!("local {kind:?} track: {description}")),
        ))
        .id())
}

pub(crate) fn publish_audio(
    publish: On<PublishAudio>,
    mut commands: Commands,
    mut links: Query<&mut RoomMediaLink>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let room = publish.entity;
    let result = audio_source(&publish.input).and_then(|source| {
        let description = format!("{:?}", publish.input);
        let command = MediaCommand::AddAudioTrack {
            source,
            settings: VoiceSettings::default(),
        };
        add_local_track(
            &mut commands,
            room,
            &mut links,
            command,
            (TrackKind::Audio, description),
        )
    });
    report(room, &mut errors, "publishing audio", result.map(drop));
}

pub(crate) fn publish_video(
    publish: On<PublishVideo>,
    mut commands: Commands,
    mut links: Query<&mut RoomMediaLink>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let room = publish.entity;
    let result = video_source(&publish.input).and_then(|(source, kind)| {
        let (width, height) = source.size();
        let mut settings = VideoSettings::for_picture(width, height, source.frame_rate());
        settings.screen_content = kind == TrackKind::Screen;
        let description = source.describe();
        let preview = publish.preview.then(VideoSlot::default);
        let source: Box<dyn VideoSource> = match &preview {
            Some(slot) => Box::new(PreviewSource::new(source, slot.clone(), PREVIEW_FPS)),
            None => source,
        };
        let command = MediaCommand::AddVideoTrack {
            source,
            settings,
            kind,
        };
        let track = add_local_track(
            &mut commands,
            room,
            &mut links,
            command,
            (kind, description),
        )?;
        if let Some(slot) = preview {
            let image = images
                .as_mut()
                .map(|images| images.add(blank_image(width as u32, height as u32)))
                .unwrap_or_default();
            commands.entity(track).insert((
                LocalPreview {
                    image,
                    frames_shown: 0,
                },
                VideoFeed::new(slot),
                LatestPicture::default(),
            ));
        }
        Ok(())
    });
    report(room, &mut errors, "publishing video", result);
}

pub(crate) fn unpublish(
    unpublish: On<Unpublish>,
    mut commands: Commands,
    tracks: Query<(&LocalTrack, &LocalTrackOf)>,
    links: Query<&RoomMediaLink>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let Ok((track, of)) = tracks.get(unpublish.entity) else {
        errors.write(StreamsMediaError {
            room: unpublish.entity,
            error: MediaRequestError::NotALocalTrack,
        });
        return;
    };
    let command = MediaCommand::RemoveTrack(track.index);
    if command_room(of.0, &links, &mut errors, "unpublishing", command) {
        commands.entity(unpublish.entity).despawn();
    }
}

/// Passes each media error on to observers too (errors are written where no `Commands` are at
/// hand; this runs once a frame).
pub(crate) fn trigger_media_errors(
    mut commands: Commands,
    mut errors: MessageReader<StreamsMediaError>,
) {
    for error in errors.read() {
        commands.trigger(error.clone());
    }
}

pub(crate) fn subscribe_tracks(
    subscribe: On<SubscribeTracks>,
    links: Query<&RoomMediaLink>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    let command = MediaCommand::SubscribeAll(subscribe.subscribed);
    command_room(
        subscribe.entity,
        &links,
        &mut errors,
        "changing subscriptions",
        command,
    );
}
