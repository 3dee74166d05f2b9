//! The engine-agnostic bevy_streams client.
//!
//! [`StreamsClient::start`] runs a thread with its own Tokio runtime that keeps an authenticated
//! connection to the bridge (reconnecting with backoff), verifies every room it receives (signed epoch
//! chains, signed metadata), decrypts what this user may read, and exposes the PrivMX StreamApi room
//! operations over bounded crossbeam channels. No Bevy here: the `bevy_streams` plugin adapts it.
#![warn(missing_docs)]

pub mod api;
pub mod audio;
pub mod backoff;
pub mod client;
/// The monotonic clock and its wall-clock anchor, shared with the bridge's side.
pub use streams_rtc::clock;
pub mod envelope;
pub mod error;
pub mod export;
pub mod link;
pub mod media;
pub mod rooms;
pub mod runtime;
pub mod tls;
pub mod transport;
pub mod turn_servers;
pub mod video;

pub use api::{
    ClientEvent, ConnectionState, NewRoom, Operation, Reply, RequestId, Room, RoomEvent, RoomPage,
    RoomUpdate,
};
pub use client::{ClientConfig, ClientHandle, StreamsClient};
pub use error::ClientError;
pub use streams_proto;
pub use tls::{TlsError, TlsTrust};
pub use transport::ConnectError;
