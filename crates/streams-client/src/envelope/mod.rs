//! The encrypted frame envelope, below both `audio`/`video` and `media`: what every protected media
//! frame carries ([`frame`]: seal and open) and the keys of one remote sender's track
//! ([`opener::FrameOpener`]). Voice, video, the media engine and the recording exporter all use it.
pub mod frame;
pub mod opener;
