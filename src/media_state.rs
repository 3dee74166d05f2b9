//! The media state of a room entity whose media is joined: exactly one of [`MediaConnecting`],
//! [`MediaConnected`], [`MediaReconnecting`] or [`MediaFailed`] (observe `On<Add, MediaConnected>`
//! to react when the room's media is up). They are named apart from the session's own markers
//! ([`crate::Connecting`], [`crate::Connected`]): the connection to the bridge and a room's media
//! connection come and go separately.
use bevy::prelude::*;

/// [`crate::JoinMedia`] was asked for: the room is being fetched, the media connection negotiated
/// and set up (none of which holds up the game: it happens on the engine's thread).
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct MediaConnecting;

/// The room's media connection is up: local tracks send, remote tracks arrive.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct MediaConnected;

/// The media session was lost (the bridge restarted, the path died) and is being set up again:
/// local tracks stay (not [`crate::LocalTrack::published`] until they are again); remote tracks
/// stay too, silent, and the same entities carry them again once they are back
/// ([`crate::AwaitingRejoin`] meanwhile).
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct MediaReconnecting;

/// The room's media ended for a reason other than leaving: removal from the room, a refused room,
/// a failed connection. It stays until the room joins its media again.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct MediaFailed {
    /// Why.
    pub reason: String,
}

/// The state a room's media is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaState {
    Connecting,
    Connected,
    Reconnecting,
    Failed(String),
}

/// Replaces the room's media state marker, keeping the four mutually exclusive.
pub(crate) fn set_media_state(commands: &mut Commands, room: Entity, state: MediaState) {
    let Ok(mut entity) = commands.get_entity(room) else {
        return;
    };
    entity.remove::<(
        MediaConnecting,
        MediaConnected,
        MediaReconnecting,
        MediaFailed,
    )>();
    match state {
        MediaState::Connecting => entity.insert(MediaConnecting),
        MediaState::Connected => entity.insert(MediaConnected),
        MediaState::Reconnecting => entity.insert(MediaReconnecting),
        MediaState::Failed(reason) => entity.insert(MediaFailed { reason }),
    };
}

/// Removes the marker of media that was left (a failure's [`MediaFailed`] stays).
pub(crate) fn clear_media_state(commands: &mut Commands, room: Entity) {
    if let Ok(mut entity) = commands.get_entity(room) {
        entity.remove::<(MediaConnecting, MediaConnected, MediaReconnecting)>();
    }
}
