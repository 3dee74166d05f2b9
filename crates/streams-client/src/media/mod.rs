//! The media plane on the client side. [`driver::RoomMedia`] runs one room's media: a sans-IO
//! [`core::RoomMediaCore`] (tracks, keys, negotiation as requests in flight) over a sans-IO WebRTC
//! connection with the bridge's SFU ([`rtc::RtcPeer`]), driven on a thread that owns the socket.
//! [`session::MediaSession`] is the same connection on a blocking socket, for tools and tests. The
//! encrypted frame format is [`crate::envelope`].
pub mod core;
pub mod driver;
pub mod events;
pub mod relay;
pub mod route;
pub mod rtc;
pub mod session;
pub mod voice;
pub mod voice_session;

/// The process's DTLS certificate and configuration, shared with the bridge's side.
pub use streams_rtc::dtls;
/// The media socket, shared with the bridge's side.
pub use streams_rtc::socket;
