//! Track entities. Remote tracks become [`RemoteTrack`] entities related to their room by
//! [`TrackOf`] — video ones carry a [`RemoteVideo`] image, audio ones are voices in the positional
//! mix ([`crate::spatial`]); tracks this client publishes are [`LocalTrack`] entities related by
//! [`LocalTrackOf`]. Despawning a room despawns both. [`drain_media_events`] applies each joined room's
//! engine events to these entities and passes every event on as a [`StreamsMediaEvent`] message and
//! observer trigger.
//!
//! A rejoin (the media session lost and set up again) keeps the entities: the remote tracks that
//! end with the old session wait ([`AwaitingRejoin`]) and each is taken back by the same track when
//! it is received again — the same track id, or, if its sender rejoined too (a new id), the
//! sender's track of the same kind — so a game's avatar, material and positional voice stay
//! attached. Those not taken back within [`REJOIN_TRACK_GRACE`] of the rejoin are despawned.
use std::time::Duration;

use bevy::prelude::*;
use streams_client::media::events::{MediaEvent, StopReason};
use streams_client::media::voice::TrackStats;
use streams_client::video::receiver::{VideoSlot, VideoStats};
use streams_client::video::sender::LocalVideoStats;
use streams_proto::wire::TrackKind;
use streams_proto::{TrackId, UserId};

use crate::media_link::{MediaRequestError, RoomMediaLink, StreamsMediaError, StreamsMediaEvent};
use crate::media_requests::LeaveMedia;
use crate::media_state::{MediaReconnecting, MediaState, set_media_state};
use crate::rooms::{RoomIndex, StreamRoom};
use crate::video_texture::{LatestPicture, RemoteVideo, VideoFeed, blank_image};

/// A remote track being received.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    /// The track id.
    pub track_id: TrackId,
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

/// A remote audio track, heard in the positional mix: from the track entity's own `GlobalTransform`
/// when it has one (parent it to an avatar), else from its participant's, else at the listener.
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

/// A track this client publishes in a room.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct LocalTrack {
    /// Its index in the room's media session (its SFrame key id depends on it).
    pub index: u8,
    /// What it carries.
    pub kind: TrackKind,
    /// Its source, in words.
    pub description: String,
    /// Whether the bridge has accepted it (it is being sent).
    pub published: bool,
}

/// The room a local track is published in.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[relationship(relationship_target = RoomLocalTracks)]
pub struct LocalTrackOf(pub Entity);

/// The tracks this client publishes in a room (despawned with it).
#[derive(Component, Debug, Default)]
#[relationship_target(relationship = LocalTrackOf, linked_spawn)]
pub struct RoomLocalTracks(Vec<Entity>);

impl RoomLocalTracks {
    /// The local track entities.
    pub fn entities(&self) -> &[Entity] {
        &self.0
    }
}

/// What a local track has sent.
#[derive(Component, Debug, Clone, Default, PartialEq)]
pub struct LocalTrackStats {
    /// Frames sent.
    pub frames: u64,
    /// Key epochs it has used, in order.
    pub epochs: Vec<u64>,
    /// For a video track, its encoder's figures.
    pub video: Option<LocalVideoStats>,
}

/// On a remote track that ended with a lost media session, while the room's media rejoins: the
/// same track takes the entity back when it is received again.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct AwaitingRejoin {
    /// When the rejoin completed ([`Time::elapsed`]); `None` while it is under way.
    rejoined_at: Option<Duration>,
}

/// How long after a rejoin a waiting remote track may be taken back before it is despawned (its
/// sender left meanwhile). The rejoined session lists and subscribes within a round trip or two.
pub const REJOIN_TRACK_GRACE: Duration = Duration::from_secs(10);

/// Media events applied per room and frame at most.
const MEDIA_EVENTS_PER_FRAME: usize = 256;

/// Applies each joined room's media events: track entities, speaking markers, statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drain_media_events(
    mut commands: Commands,
    links: Query<(Entity, &StreamRoom, &RoomMediaLink, Has<MediaReconnecting>)>,
    remote: Query<(Entity, &RemoteTrack, &TrackOf, Option<&AwaitingRejoin>)>,
    mut local: Query<(Entity, &mut LocalTrack, &LocalTrackOf)>,
    index: Res<RoomIndex>,
    mut images: Option<ResMut<Assets<Image>>>,
    mut messages: MessageWriter<StreamsMediaEvent>,
    mut errors: MessageWriter<StreamsMediaError>,
    time: Res<Time>,
) {
    for (room, stream_room, link, reconnecting) in &links {
        let Some(media) = link.media() else {
            continue;
        };
        let events: Vec<MediaEvent> = media
            .events()
            .try_iter()
            .take(MEDIA_EVENTS_PER_FRAME)
            .collect();
        let remote_entities = |track_id: TrackId| {
            remote
                .iter()
                .filter(move |(_, track, of, _)| of.0 == room && track.track_id == track_id)
                .map(|(entity, _, _, _)| entity)
                .collect::<Vec<_>>()
        };
        // Within this frame's events (commands apply after the system): whether the media is
        // rejoining, and the tracks waiting to be taken back.
        let mut rejoining = reconnecting;
        let mut waiting: Vec<(Entity, RemoteTrack)> = remote
            .iter()
            .filter(|(_, _, of, awaiting)| of.0 == room && awaiting.is_some())
            .map(|(entity, track, _, _)| (entity, track.clone()))
            .collect();
        for event in events {
            match &event {
                MediaEvent::RemoteTrackAdded {
                    track_id,
                    user_id,
                    kind,
                } => {
                    // The same track, else (its sender rejoined too) the sender's of this kind.
                    let back = waiting
                        .iter()
                        .find(|(_, t)| t.track_id == *track_id)
                        .or_else(|| {
                            waiting
                                .iter()
                                .find(|(_, t)| t.user_id == *user_id && t.kind == *kind)
                        })
                        .map(|(entity, _)| *entity);
                    let track = RemoteTrack {
                        track_id: *track_id,
                        user_id: user_id.clone(),
                        kind: *kind,
                    };
                    let video = (*kind != TrackKind::Audio)
                        .then(|| media.video(*track_id))
                        .flatten();
                    let name = Name::new(format!("remote {kind:?} track {track_id}"));
                    if let Some(entity) = back {
                        waiting.retain(|(e, _)| *e != entity);
                        let mut again = commands.entity(entity);
                        again.remove::<AwaitingRejoin>().insert((track, name));
                        // The picture keeps its image (a material showing it goes on showing it).
                        if let Some(slot) = video {
                            again.insert((VideoFeed::new(slot), LatestPicture::default()));
                        }
                    } else {
                        spawn_remote_track(&mut commands, &mut images, room, (track, name), video);
                    }
                }
                MediaEvent::RemoteTrackRemoved { track_id } => {
                    for entity in remote_entities(*track_id) {
                        if !rejoining {
                            commands.entity(entity).despawn();
                            continue;
                        }
                        // Kept, silent, for the same track to take back.
                        let awaiting = AwaitingRejoin { rejoined_at: None };
                        commands.entity(entity).insert(awaiting);
                        if let Ok((_, track, _, _)) = remote.get(entity)
                            && !waiting.iter().any(|(e, _)| *e == entity)
                        {
                            waiting.push((entity, track.clone()));
                        }
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
                        for entity in remote_entities(*track_id) {
                            commands.entity(entity).insert(AudioTrackStats(s.clone()));
                        }
                    }
                }
                MediaEvent::VideoStats(stats) => {
                    for (track_id, s) in stats {
                        for entity in remote_entities(*track_id) {
                            commands.entity(entity).insert(VideoTrackStats(s.clone()));
                        }
                    }
                }
                MediaEvent::LocalTrackPublished { index, .. } => {
                    for (_, mut track, of) in &mut local {
                        if of.0 == room && track.index == *index && !track.published {
                            track.published = true;
                        }
                    }
                }
                MediaEvent::LocalStats {
                    index,
                    frames,
                    epochs,
                    video,
                } => {
                    for (entity, track, of) in &local {
                        if of.0 == room && track.index == *index {
                            commands.entity(entity).insert(LocalTrackStats {
                                frames: *frames,
                                epochs: epochs.clone(),
                                video: video.clone(),
                            });
                        }
                    }
                }
                MediaEvent::LocalTrackFailed { index, reason } => {
                    for (entity, track, of) in &local {
                        if of.0 == room && track.index == *index {
                            commands.entity(entity).despawn();
                        }
                    }
                    errors.write(StreamsMediaError {
                        room,
                        error: MediaRequestError::LocalTrack {
                            index: *index,
                            reason: reason.clone(),
                        },
                    });
                }
                MediaEvent::Stopped { reason } => {
                    info!("room media stopped: {reason}");
                    commands.trigger(LeaveMedia { entity: room });
                    if *reason != StopReason::Owner {
                        set_media_state(
                            &mut commands,
                            room,
                            MediaState::Failed(reason.to_string()),
                        );
                    }
                }
                MediaEvent::Connected => {
                    set_media_state(&mut commands, room, MediaState::Connected);
                }
                MediaEvent::Reconnecting { .. } => {
                    rejoining = true;
                    set_media_state(&mut commands, room, MediaState::Reconnecting);
                    for (_, mut track, of) in &mut local {
                        if of.0 == room {
                            track.published = false;
                        }
                    }
                }
                // `Connected` comes with it; the waiting tracks have a grace from now.
                MediaEvent::Rejoined { .. } => {
                    rejoining = false;
                    let rejoined_at = Some(time.elapsed());
                    for (entity, _) in &waiting {
                        commands
                            .entity(*entity)
                            .insert(AwaitingRejoin { rejoined_at });
                    }
                }
                // A moved or silent path keeps the session and its state.
                MediaEvent::NegotiationFailed(_)
                | MediaEvent::PathChanged { .. }
                | MediaEvent::PathLost
                | MediaEvent::PathBack { .. }
                | MediaEvent::RelayReady { .. }
                | MediaEvent::RelayFailed { .. } => {}
            }
            continue_event(&mut commands, &mut messages, room, event);
        }
    }
}

/// A new remote track entity: a voice in the positional mix (the engine handed it there), or a
/// picture with an image of its own.
fn spawn_remote_track(
    commands: &mut Commands,
    images: &mut Option<ResMut<Assets<Image>>>,
    room: Entity,
    (track, name): (RemoteTrack, Name),
    video: Option<VideoSlot>,
) {
    let kind = track.kind;
    let mut entity = commands.spawn((track, TrackOf(room), name));
    if kind == TrackKind::Audio {
        entity.insert((RemoteVoice, AudioTrackStats::default()));
    } else if let Some(slot) = video {
        let image = images
            .as_mut()
            .map(|images| images.add(blank_image(2, 2)))
            .unwrap_or_default();
        entity.insert((
            RemoteVideo {
                image,
                frames_shown: 0,
            },
            VideoFeed::new(slot),
            LatestPicture::default(),
            VideoTrackStats::default(),
        ));
    }
}

/// Passes a media event on, as an observer trigger and a message.
fn continue_event(
    commands: &mut Commands,
    messages: &mut MessageWriter<StreamsMediaEvent>,
    room: Entity,
    event: MediaEvent,
) {
    commands.trigger(StreamsMediaEvent {
        room,
        event: event.clone(),
    });
    messages.write(StreamsMediaEvent { room, event });
}

/// Despawns the remote tracks that waited for a rejoin and were not taken back within
/// [`REJOIN_TRACK_GRACE`] of it.
pub(crate) fn expire_awaiting_tracks(
    mut commands: Commands,
    time: Res<Time>,
    awaiting: Query<(Entity, &AwaitingRejoin)>,
) {
    for (entity, awaiting) in &awaiting {
        if awaiting
            .rejoined_at
            .is_some_and(|at| time.elapsed().saturating_sub(at) >= REJOIN_TRACK_GRACE)
        {
            commands.entity(entity).despawn();
        }
    }
}
