//! A room's link to its media engine ([`RoomMediaLink`], the component that owns the
//! [`RoomMedia`]) and what comes back from it: every engine event as a [`StreamsMediaEvent`], and
//! failed requests as [`StreamsMediaError`]s.
use std::sync::Arc;

use bevy::ecs::lifecycle::HookContext;
use bevy::ecs::world::DeferredWorld;
use bevy::platform::cell::SyncCell;
use bevy::prelude::*;
use streams_client::ClientError;
use streams_client::media::driver::StartError;
use streams_client::media::driver::{MediaLaunch, RoomMedia};
use streams_client::media::events::{MediaCommand, MediaEvent};

/// The room's media engine. Removing it (or despawning the room) stops the engine, at the end of
/// the frame.
#[derive(Component)]
#[component(on_discard = retire_engine)]
pub struct RoomMediaLink {
    /// `None` once the link is being removed (the engine waits in [`MediaLaunches`]).
    media: Option<RoomMedia>,
    /// The index the engine gives the next local track (it numbers them in the order added).
    next_local: u8,
}

impl RoomMediaLink {
    pub(crate) fn new(media: RoomMedia) -> Self {
        RoomMediaLink {
            media: Some(media),
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
        self.media.as_ref().is_some_and(|media| media.send(command))
    }

    pub(crate) fn media(&self) -> Option<&RoomMedia> {
        self.media.as_ref()
    }
}

/// Engines to start and to stop at the end of the frame. Starting one (a thread making its
/// connection and asking the bridge for the room) and stopping one (final figures, closing the
/// session, freeing the connection) are bursts of work on other threads; begun in the middle of a
/// frame they compete with the game's systems for the cores (measured by `streams-bench join`).
#[derive(Resource, Default)]
pub(crate) struct MediaLaunches {
    /// `SyncCell`: a prepared engine is `Send` but not `Sync`, and only the plugin's systems
    /// (with `&mut` access) touch it.
    launches: Vec<(Entity, SyncCell<MediaLaunch>)>,
    retired: Vec<RoomMedia>,
}

impl MediaLaunches {
    /// Starts `room`'s prepared engine at the end of the frame.
    pub(crate) fn launch(&mut self, room: Entity, engine: MediaLaunch) {
        self.launches.push((room, SyncCell::new(engine)));
    }
}

/// A link is going: its engine is stopped at the end of the frame (at once without the plugin).
fn retire_engine(mut world: DeferredWorld, context: HookContext) {
    let Some(media) = world
        .get_mut::<RoomMediaLink>(context.entity)
        .and_then(|mut link| link.media.take())
    else {
        return;
    };
    if let Some(mut launches) = world.get_resource_mut::<MediaLaunches>() {
        launches.retired.push(media);
    }
}

/// Starts the engines joined this frame and stops the ones left (the last system of the frame).
pub(crate) fn launch_and_retire_engines(
    mut launches: ResMut<MediaLaunches>,
    mut errors: MessageWriter<StreamsMediaError>,
) {
    for (room, engine) in launches.launches.drain(..) {
        if let Err(e) = SyncCell::to_inner(engine).launch() {
            warn!("starting the media engine failed: {e}");
            errors.write(StreamsMediaError {
                room,
                error: MediaRequestError::Start(Arc::new(e)),
            });
        }
    }
    // Dropping a `RoomMedia` asks its engine to stop; it winds down on its own thread.
    launches.retired.clear();
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
