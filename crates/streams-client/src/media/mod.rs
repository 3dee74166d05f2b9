//! The media plane on the client side: a WebRTC session with the bridge's SFU per room
//! ([`session::MediaSession`]) and the encrypted frame format carried over it ([`frame`]).
pub mod engine;
pub mod frame;
pub mod mixer;
pub mod opener;
pub mod session;
pub mod voice;
pub mod voice_session;
