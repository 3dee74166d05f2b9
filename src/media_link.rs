//! A room's link to its media engine ([`RoomMediaLink`], the component that owns the
//! [`RoomMedia`]) and what comes back from it: every engine event as a [`StreamsMediaEvent`], and
//! failed requests as [`StreamsMediaError`]s.
use std::sync::Arc;

use bevy::prelude::*;
use streams_client::ClientError;
use streams_client::media::driver::RoomMedia;
use streams_client::media::driver::StartError;
use streams_client::media::events::{MediaCommand, MediaEvent};

/// The room's media engine. Removing it (or despawning the room) stops the engine.
#[derive(Component)]
pub struct RoomMediaLink {
    media: RoomMedia,
    /// The index the engine gives the next local track (it numbers them in the order added).
    next_local: u8,
}

impl RoomMediaLink {
    pub(crate) fn new(media: RoomMedia) -> Self {
        RoomMediaLink {
            media,
            next_local: 0,
        }
    }

    /// The index the engine gives the next local track; counts it as taken.
    pub(crate) fn take_local_index(&mut self) -> u8 {
        let index = self.next_local;
        self.next_local = self.next_local.saturating_add(1);
        index
    }

    /// Sends a command to the engine (`false` if it stopped or is flooded).
    pub fn send(&self, command: MediaCommand) -> bool {
        self.media.send(command)
    }

    pub(crate) fn media(&self) -> &RoomMedia {
        &self.media
    }
}

/// Every event of a room's media engine (a message, and a trigger for observers).
#[derive(Message, Event, Debug, Clone)]
pub struct StreamsMediaEvent {
    /// The room entity.
    pub room: Entity,
    /// What happened.
    pub event: MediaEvent,
}

/// A media request failed (a message, and a trigger for observers).
#[derive(Message, Event, Debug, Clone)]
pub struct StreamsMediaError {
    /// The room entity.
    pub room: Entity,
    /// Why.
    pub error: MediaRequestError,
}

/// Why a media request failed (or a local track ended).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MediaRequestError {
    /// The entity is not a room.
    #[error("not a room entity")]
    NotARoom,
    /// The entity is not a local track.
    #[error("not a local track entity")]
    NotALocalTrack,
    /// The plugin's client is not running (it failed to start).
    #[error("the streams client is not running")]
    NoClient,
    /// The room's media is not joined.
    #[error("join the room's media first")]
    NotJoined,
    /// The room's media engine has stopped (or is flooded with commands).
    #[error("the media engine has stopped")]
    EngineStopped,
    /// The client refused.
    #[error(transparent)]
    Client(Arc<ClientError>),
    /// The room's media could not start.
    #[error("cannot start the room's media: {0}")]
    Start(Arc<StartError>),
    /// The audio input could not be opened.
    #[error("cannot open the audio input: {0}")]
    AudioInput(Arc<dyn std::error::Error + Send + Sync>),
    /// The video input could not be opened.
    #[error("cannot open the video input: {0}")]
    VideoInput(Arc<dyn std::error::Error + Send + Sync>),
    /// This build has no camera support (the `camera` feature).
    #[error("built without camera support")]
    NoCameraSupport,
    /// The engine gave up on a local track.
    #[error("local track {index} failed: {reason}")]
    LocalTrack {
        /// The track's index.
        index: u8,
        /// Why.
        reason: String,
    },
}
