//! The SFU: the bridge's media sessions, spread by room over forwarding workers (one thread and
//! one UDP socket each).
//! It forwards SFrame-encrypted frames from publishers to subscribers without decoding them, and
//! never negotiates the audio-level header extension (it would tell the bridge who is speaking).
//! Audio is Opus; video is H.264 carrying one opaque NAL unit of ciphertext per frame (see the
//! client's `video::carriage`). Forwarding is at the RTP level: each packet is written as it came
//! on every leg, renumbered for that leg's stream; str0m encrypts it and, for video, keeps it to
//! answer the subscriber's NACKs. A subscriber's keyframe request (PLI/FIR) is passed on to the
//! publisher of that track, at most once per [`KEYFRAME_REQUEST_GAP`] per track.
//!
//! - [`core::SfuCore`]: the sans-IO state machine (sessions in a slot map, the routing table of
//!   [`routes`], demultiplexing by source address); `media.rs` is its media path, [`outgoing`]
//!   and [`renumber`] write one leg, [`reassembly`] rebuilds recorded video frames, [`offer`]
//!   keeps congestion feedback off audio m-lines, `stun.rs` reads which session a STUN check is
//!   for, [`addresses`] says what the sessions announce and which of it a datagram reached.
//! - [`handle::SfuHandle`]: the signaling side's commands, and which worker each room lives on;
//!   `worker.rs`: one worker's queue and thread; `driver.rs`: the thread's loop on its socket.
use std::time::Duration;

pub mod addresses;
pub mod core;
mod driver;
pub mod handle;
mod media;
pub mod offer;
pub mod outgoing;
pub mod reassembly;
pub mod renumber;
pub mod routes;
pub mod session;
mod stun;
mod worker;

pub use self::addresses::{AddressError, MediaAddresses};
pub use self::core::{Negotiated, SfuCore};
pub use self::handle::{LostStreams, SfuHandle};
pub use self::worker::SfuStartError;

/// Most tracks one media session may receive.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Keyframe requests for one published track closer together than this are merged.
pub const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests;
