//! [`StreamsPlugin`]: starts the client (and optionally an embedded bridge), spawns the session entity,
//! sets up positional voice, and schedules the [`StreamsSystems`] sets.
use std::path::PathBuf;
use std::sync::Arc;

use bevy::prelude::*;
use bevy::transform::TransformSystems;
use streams_client::audio::spatial::{Attenuation, DistanceModel, Hrtf};
use streams_client::{ClientConfig, ClientError, StreamsClient, TlsTrust};
use streams_proto::{CertFingerprint, Identity};

use crate::media::{
    deafen, join_media, leave_media, mute_microphone, publish_audio, publish_video,
    subscribe_tracks, trigger_media_errors, unpublish,
};
use crate::media_link::{
    MediaLaunches, StreamsMediaError, StreamsMediaEvent, launch_and_retire_engines,
};
use crate::spatial::{SpatialAudio, proximity, publish_poses};
use crate::tracks::{drain_media_events, expire_awaiting_tracks};
use crate::video_texture::apply_video_frames;
use crate::video_texture::{LocalPreview, RemoteVideo};

use crate::commands::{ClientResource, StreamsCommands, flush_commands};
use crate::receive::{ChannelClosed, EventBudget, StreamsReply, StreamsRoomEvent, receive_events};
use crate::rooms::RoomIndex;
use crate::session::{Disconnected, LocalIdentity, LocalUser, StreamsSession};

/// Which bridge to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BridgeTarget {
    /// A bridge at this WebSocket URL.
    Url(String),
    /// A bridge started inside this process (open mode, in-memory store): for examples and local play.
    #[cfg(feature = "embedded-bridge")]
    Embedded,
}

/// The system sets of bevy_streams.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamsSystems {
    /// In `PreUpdate`: client and media events become entity changes, messages and observer
    /// triggers; remote video pictures and local previews are written into their images.
    Receive,
    /// In `PostUpdate`: queued operations go to the client.
    Send,
    /// In `PostUpdate`, after transform propagation: the listener's and the voices' poses go to the
    /// positional mix, and voices out of earshot are unsubscribed.
    Poses,
}

/// The bundled HRTF set (MIT KEMAR; see `assets/hrtf/README.md` for its citation).
pub const BUNDLED_HRTF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/hrtf/mit_kemar_normal_pinna.sofa"
);

/// The bevy_streams plugin.
pub struct StreamsPlugin {
    /// Which bridge.
    pub bridge: BridgeTarget,
    /// Who this player is; a fresh identity when `None` (fine for development, not for real users,
    /// whose id must stay the same across runs).
    pub identity: Option<Identity>,
    /// How many client events are applied per frame at most (the rest wait for the next frame).
    pub events_per_frame: usize,
    /// Play the positional mix on the default output device (a null sink without one). Off, the
    /// mix is only rendered by whoever calls [`SpatialAudio::render`] (tests, tools).
    pub audio_output: bool,
    /// The HRTF set (SOFA); equal-power panning when `None` or unreadable.
    pub hrtf: Option<PathBuf>,
    /// How voices fade with distance; beyond `max_distance` they are unsubscribed.
    pub attenuation: Attenuation,
    /// Which certificates a `wss://` bridge may present (default: the platform's roots).
    pub tls: TlsTrust,
    /// Allow plain `ws://` to a bridge on another machine (unencrypted signaling: private test
    /// networks only). Off by default.
    pub allow_insecure: bool,
}

fn defaults(bridge: BridgeTarget) -> StreamsPlugin {
    StreamsPlugin {
        bridge,
        identity: None,
        events_per_frame: 256,
        audio_output: true,
        hrtf: Some(PathBuf::from(BUNDLED_HRTF)),
        attenuation: Attenuation {
            model: DistanceModel::Inverse,
            ref_distance: 1.0,
            max_distance: 30.0,
            rolloff: 1.0,
        },
        tls: TlsTrust::default(),
        allow_insecure: false,
    }
}

impl StreamsPlugin {
    /// Connects to a bridge at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        defaults(BridgeTarget::Url(url.into()))
    }

    /// Starts a bridge in this process and connects to it.
    #[cfg(feature = "embedded-bridge")]
    pub fn embedded() -> Self {
        defaults(BridgeTarget::Embedded)
    }

    /// Uses this identity.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Trusts exactly the bridge certificate with this SHA-256 fingerprint (a self-signed
    /// bridge's, as `streams-bridge --tls-self-signed` prints it).
    pub fn with_pinned_certificate(mut self, fingerprint: CertFingerprint) -> Self {
        self.tls = TlsTrust::Pinned(fingerprint);
        self
    }
}

/// The embedded bridge's address (for bots and tools that want to join the same bridge).
#[cfg(feature = "embedded-bridge")]
#[derive(Resource, Clone, Debug)]
pub struct EmbeddedBridge {
    /// The WebSocket URL.
    pub url: String,
}

impl Plugin for StreamsPlugin {
    fn build(&self, app: &mut App) {
        // The media connections' DTLS certificate and configuration, made off the main thread
        // before the first join.
        let _ = std::thread::Builder::new()
            .name("streams-certificate".into())
            .spawn(streams_client::media::dtls::prepare);
        let identity = self.identity.clone().unwrap_or_else(Identity::generate);
        let hrtf = self.hrtf.as_ref().and_then(|path| match Hrtf::load(path) {
            Ok(hrtf) => Some(Arc::new(hrtf)),
            Err(e) => {
                warn!("{e}; voices are panned with equal power instead");
                None
            }
        });
        app.insert_resource(SpatialAudio::new(hrtf, self.audio_output, self.attenuation))
            .insert_resource(LocalIdentity(identity.clone()))
            .add_message::<StreamsMediaEvent>()
            .add_message::<StreamsMediaError>()
            .add_observer(join_media)
            .add_observer(leave_media)
            .add_observer(publish_audio)
            .add_observer(publish_video)
            .add_observer(unpublish)
            .add_observer(subscribe_tracks)
            .add_observer(mute_microphone)
            .add_observer(deafen)
            .configure_sets(
                PostUpdate,
                StreamsSystems::Poses.after(TransformSystems::Propagate),
            )
            .add_systems(
                PreUpdate,
                (
                    drain_media_events,
                    expire_awaiting_tracks,
                    trigger_media_errors,
                    apply_video_frames::<RemoteVideo>,
                    apply_video_frames::<LocalPreview>,
                )
                    .chain()
                    .after(receive_events)
                    .in_set(StreamsSystems::Receive),
            )
            .add_systems(
                PostUpdate,
                (publish_poses, proximity).in_set(StreamsSystems::Poses),
            )
            .init_resource::<MediaLaunches>()
            .add_systems(Last, launch_and_retire_engines);
        app.add_message::<StreamsReply>()
            .add_message::<StreamsRoomEvent>()
            .init_resource::<RoomIndex>()
            .init_resource::<StreamsCommands>()
            .init_resource::<ChannelClosed>()
            .insert_resource(EventBudget(self.events_per_frame.max(1)))
            .insert_resource(LocalUser(identity.user_id().clone()))
            .configure_sets(PreUpdate, StreamsSystems::Receive)
            .configure_sets(PostUpdate, StreamsSystems::Send)
            .add_systems(PreUpdate, receive_events.in_set(StreamsSystems::Receive))
            .add_systems(PostUpdate, flush_commands.in_set(StreamsSystems::Send));

        #[cfg(feature = "embedded-bridge")]
        let mut embedded = None;
        let url = match &self.bridge {
            BridgeTarget::Url(url) => Ok(url.clone()),
            #[cfg(feature = "embedded-bridge")]
            BridgeTarget::Embedded => {
                match streams_bridge::Bridge::spawn(streams_bridge::BridgeConfig::ephemeral()) {
                    Ok(handle) => {
                        let url = handle.url();
                        info!("embedded bridge listening on {url}");
                        app.insert_resource(EmbeddedBridge { url: url.clone() });
                        embedded = Some(handle);
                        Ok(url)
                    }
                    Err(e) => Err((format!("cannot start the embedded bridge: {e}"), None)),
                }
            }
        };
        let started = url.clone().and_then(|url| {
            // Refused here: a URL that is not a bridge's, or plain ws:// to another machine.
            let mut config = ClientConfig::new(url, identity);
            config.tls = self.tls.clone();
            config.allow_insecure = self.allow_insecure;
            StreamsClient::start(config).map_err(|e| {
                let error = match &e {
                    ClientError::Connect(error) => Some(error.clone()),
                    _ => None,
                };
                (format!("cannot start the streams client: {e}"), error)
            })
        });
        let bridge_url = url.unwrap_or_default();
        match started {
            Ok(client) => {
                app.insert_resource(ClientResource {
                    client,
                    #[cfg(feature = "embedded-bridge")]
                    _embedded_bridge: embedded,
                });
                app.world_mut()
                    .spawn((StreamsSession { bridge_url }, Name::new("streams session")));
            }
            Err((reason, error)) => {
                error!("{reason}");
                app.world_mut().spawn((
                    StreamsSession { bridge_url },
                    Disconnected { reason, error },
                    Name::new("streams session"),
                ));
            }
        }
    }
}
