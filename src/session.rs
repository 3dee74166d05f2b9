//! The session entity: one per plugin, carrying exactly one of the state markers [`Connecting`],
//! [`Connected`] or [`Disconnected`] (observe `On<Add, Connected>` to react to a connection).
use bevy::prelude::*;
use streams_client::{ConnectError, ConnectionState};
use streams_proto::UserId;

/// The local user's id, as a resource.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct LocalUser(pub UserId);

/// The local identity (its private key stays in this process; media engines sign and unwrap with it).
#[derive(Resource, Clone)]
pub(crate) struct LocalIdentity(pub streams_proto::Identity);

/// The entity that stands for the connection to the bridge.
#[derive(Component, Debug)]
pub struct StreamsSession {
    /// The bridge URL.
    pub bridge_url: String,
}

/// Trying to connect.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct Connecting {
    /// Which attempt.
    pub attempt: u32,
}

/// Connected and authenticated.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct Connected;

/// Not connected; the client retries in the background unless it stopped.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct Disconnected {
    /// Why.
    pub reason: String,
    /// The typed reason when connecting failed (a refused certificate or key, an unreachable
    /// bridge, a `ws://` URL to another machine); `None` when a connection was lost.
    pub error: Option<ConnectError>,
}

/// Replaces the session's state marker, keeping the three mutually exclusive.
pub(crate) fn set_state(commands: &mut Commands, session: Entity, state: ConnectionState) {
    let mut entity = commands.entity(session);
    entity.remove::<(Connecting, Connected, Disconnected)>();
    match state {
        ConnectionState::Connecting { attempt } => {
            entity.insert(Connecting { attempt });
        }
        ConnectionState::Connected { .. } => {
            entity.insert(Connected);
        }
        ConnectionState::Disconnected { reason, error } => {
            entity.insert(Disconnected { reason, error });
        }
    }
}
