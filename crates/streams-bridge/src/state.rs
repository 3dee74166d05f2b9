//! [`BridgeState`]: what every connection shares — the store, the hub, the SFU, the connections kept
//! for a resume, and the access mode.
use std::sync::{Arc, Mutex};

use streams_proto::wire::{ErrorCode, WireError};

use crate::hub::Hub;
use crate::resume::Resumption;
use crate::sfu::SfuHandle;
use crate::store::{Store, StoreError};
use crate::turn::TurnRelays;

/// Shared by all connections of one bridge.
pub struct BridgeState {
    store: Arc<Mutex<Box<dyn Store>>>,
    /// Connections, subscriptions, presence.
    pub hub: Mutex<Hub>,
    /// The media forwarder.
    pub sfu: SfuHandle,
    /// Development mode: any key may connect.
    pub open: bool,
    /// Where recordings are written (`None`: this bridge does not record).
    pub recordings: Option<std::path::PathBuf>,
    /// Connections kept through a drop for their clients to resume.
    pub resumption: Resumption,
    /// The TURN servers handed to clients (`None`: none).
    pub turn: Option<TurnRelays>,
}

impl BridgeState {
    /// Wraps a store and an SFU.
    pub fn new(store: Box<dyn Store>, sfu: SfuHandle, open: bool) -> Self {
        BridgeState {
            store: Arc::new(Mutex::new(store)),
            hub: Mutex::new(Hub::default()),
            sfu,
            open,
            recordings: None,
            resumption: Resumption::default(),
            turn: None,
        }
    }

    /// Runs `f` on the store off the async threads.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = store
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(guard.as_mut())
        })
        .await;
        match joined {
            Ok(result) => result.map_err(store_error),
            Err(e) => {
                tracing::error!("store task failed: {e}");
                Err(WireError::new(ErrorCode::Internal, "store task failed"))
            }
        }
    }

    /// Locks the hub (never held across an await).
    pub fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Maps store failures to wire errors.
pub fn store_error(e: StoreError) -> WireError {
    match e {
        StoreError::AlreadyExists(id) => WireError::new(
            ErrorCode::AlreadyExists,
            format!("room {id} already exists"),
        ),
        StoreError::Conflict(id) => WireError::new(
            ErrorCode::Conflict,
            format!("room {id} changed while this update was applied; fetch it and retry"),
        ),
        StoreError::NotFound(_) => not_found(),
        other => {
            tracing::error!("store: {other}");
            WireError::new(
                ErrorCode::Internal,
                "the bridge's store failed; nothing was changed",
            )
        }
    }
}

/// The one answer for a room that does not exist and a room the caller may not see.
pub fn not_found() -> WireError {
    WireError::new(ErrorCode::NotFound, "no such room")
}
