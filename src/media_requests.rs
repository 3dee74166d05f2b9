//! What a game asks of a room's media: join and leave it, publish and unpublish tracks, subscribe,
//! mute and deafen — entity events that [`crate::media`]'s observers carry out.
use std::path::PathBuf;

use bevy::prelude::*;

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
    /// Also show what is captured: the local track entity gets a [`LocalPreview`](crate::LocalPreview) image.
    pub preview: bool,
}

/// Request: stop publishing this local track (its [`LocalTrack`](crate::LocalTrack) entity is despawned).
#[derive(EntityEvent, Clone, Debug)]
pub struct Unpublish {
    /// The local track entity.
    pub entity: Entity,
}

/// Request: receive the room's remote tracks (`true`, what joining does) or none of them.
#[derive(EntityEvent, Clone, Debug)]
pub struct SubscribeTracks {
    /// The room entity.
    pub entity: Entity,
    /// Receive them.
    pub subscribed: bool,
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
