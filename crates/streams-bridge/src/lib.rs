//! The bevy_streams bridge: a self-hosted server that keeps Stream Rooms in an embedded SQLite store,
//! authenticates users by a signed challenge, enforces room policies, and fans out room and presence
//! events to members. It stores and relays signed, encrypted records it cannot forge or read.
//!
//! Signaling is WebSocket, over TLS (`wss://`, rustls) when given a certificate ([`TlsSource`]).
//!
//! Run it with `streams-bridge` (see `--help`), or embed it with [`Bridge::spawn`].
#![warn(missing_docs)]

pub mod connection;
pub mod hub;
pub mod recorder;
pub mod requests;
pub mod resume;
pub mod server;
pub mod sfu;
pub mod state;
pub mod store;
pub mod tls;
pub mod turn;

pub use server::{Bridge, BridgeConfig, BridgeError, BridgeHandle};
pub use store::{SqliteStore, Store, StoreError};
pub use tls::{TlsServer, TlsSetupError, TlsSource};
