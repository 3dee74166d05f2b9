//! Turning recordings into files any player opens: [`fetch`] downloads a recording and its key
//! bundles through the bridge, [`exporter`] opens its frames with the member's keys and writes them
//! with [`matroska`].
pub mod exporter;
pub mod fetch;
pub mod matroska;

use crate::error::ClientError;
use crate::export::matroska::MatroskaError;

/// Why an export failed as a whole (what fails for single frames or tracks is in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the recording or writing the files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The bridge refused or answered oddly.
    #[error("bridge: {0}")]
    Bridge(String),
    /// A request failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The recording's manifest or key bundles are unusable.
    #[error("recording: {0}")]
    Format(String),
    /// The Matroska writer failed.
    #[error("matroska: {0}")]
    Matroska(#[from] MatroskaError),
}
