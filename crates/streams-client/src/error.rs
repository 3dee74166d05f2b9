//! [`ClientError`]: everything an operation can fail with.
use streams_proto::CryptoError;
use streams_proto::wire::{ErrorCode, WireError};

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The bridge answered with an error.
    #[error("bridge refused: {0}")]
    Bridge(WireError),
    /// Something the bridge served does not verify or decrypt (a forged record, a rollback, …).
    #[error("verification failed: {0}")]
    Crypto(#[from] CryptoError),
    /// The operation is not allowed for this user (checked locally before anything is sent).
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The connection to the bridge is down; the operation was not applied, or its outcome is unknown.
    #[error("disconnected from the bridge: {0}")]
    Disconnected(String),
    /// No connection could be made: the URL, TLS or the login was refused (or, from
    /// [`crate::StreamsClient::wait_connected`], the last attempt's reason).
    #[error("cannot connect to the bridge: {0}")]
    Connect(crate::transport::ConnectError),
    /// No answer in time.
    #[error("the bridge did not answer in time")]
    Timeout,
    /// The command channel is full; try again next frame.
    #[error("too many commands queued")]
    Busy,
    /// The client runtime has stopped.
    #[error("the client runtime has stopped")]
    Stopped,
    /// The bridge answered with something this operation does not expect.
    #[error("unexpected reply from the bridge: {0}")]
    Unexpected(String),
    /// Invalid arguments.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The bridge's error code, if the bridge refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Bridge(e) => Some(e.code),
            _ => None,
        }
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        ClientError::Bridge(e)
    }
}
