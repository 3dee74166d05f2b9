//! The room store: a trait, so a shared database can replace the embedded SQLite one ([`SqliteStore`]).
//!
//! Every method is one transaction: a failed call changes nothing.
mod sqlite;

pub use sqlite::SqliteStore;
use streams_proto::wire::Paging;
use streams_proto::{ContextId, RoomId, RoomRecord, UserId};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A room with this id exists.
    #[error("room {0} already exists")]
    AlreadyExists(RoomId),
    /// The room changed since it was read (optimistic concurrency).
    #[error("room {0} was changed concurrently")]
    Conflict(RoomId),
    /// No such room.
    #[error("room {0} does not exist")]
    NotFound(RoomId),
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// The database holds data this build cannot read.
    #[error("corrupt or incompatible store: {0}")]
    Corrupt(String),
}

/// Where rooms and registered users live.
pub trait Store: Send + 'static {
    /// Registers a user in a context; `false` if already registered.
    fn add_user(
        &mut self,
        user: &UserId,
        context: &ContextId,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Removes a user; `false` if not registered.
    fn remove_user(&mut self, user: &UserId) -> Result<bool, StoreError>;
    /// All registered users.
    fn users(&self) -> Result<Vec<UserId>, StoreError>;
    /// Whether a user is registered.
    fn is_registered(&self, user: &UserId) -> Result<bool, StoreError>;
    /// Stores a new room.
    fn create_room(&mut self, room: &RoomRecord) -> Result<(), StoreError>;
    /// Reads one room.
    fn room(&self, id: &RoomId) -> Result<Option<RoomRecord>, StoreError>;
    /// Replaces a room if its stored version is still `read_version`; appends new epoch records.
    fn replace_room(&mut self, room: &RoomRecord, read_version: u64) -> Result<(), StoreError>;
    /// Deletes a room and its epochs; `false` if it did not exist.
    fn delete_room(&mut self, id: &RoomId) -> Result<bool, StoreError>;
    /// One page of the rooms of `context` that `viewer` may get, and how many there are in all.
    fn list_rooms(
        &self,
        context: &ContextId,
        viewer: &UserId,
        paging: Paging,
    ) -> Result<(Vec<RoomRecord>, u64), StoreError>;
}
