//! Turning recordings into files any player opens.
pub mod matroska;
