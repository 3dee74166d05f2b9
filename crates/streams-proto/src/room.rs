//! [`RoomRecord`]: a Stream Room as the bridge stores and serves it (PrivMX `StreamRoom`).
use serde::{Deserialize, Serialize};

use crate::epoch::EpochRecord;
use crate::ids::{ContextId, RoomId, UserId};
use crate::meta::SignedMeta;
use crate::policy::{Policy, Role};

/// A room as stored by the bridge: bookkeeping fields the bridge sets, plus the signed epoch chain and
/// signed metadata that only clients can fully verify and decrypt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// The room id.
    pub id: RoomId,
    /// The context it belongs to.
    pub context_id: ContextId,
    /// Creation time, milliseconds since the Unix epoch (bridge clock).
    pub created_at: i64,
    /// Who created it.
    pub created_by: UserId,
    /// Last modification time, milliseconds since the Unix epoch (bridge clock).
    pub modified_at: i64,
    /// Who modified it last.
    pub modified_by: UserId,
    /// Incremented by every update; updates name the version they were made against.
    pub version: u64,
    /// Public and private metadata of the current epoch.
    pub meta: SignedMeta,
    /// Every epoch record, oldest first. The last one says who is in the room now.
    pub epochs: Vec<EpochRecord>,
}

impl RoomRecord {
    /// The current epoch record.
    ///
    /// Records served by the bridge always carry at least the genesis epoch.
    pub fn latest(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// The current key epoch.
    pub fn key_epoch(&self) -> u64 {
        self.latest().map_or(0, |r| r.epoch)
    }

    /// The room's users.
    pub fn users(&self) -> &[UserId] {
        self.latest().map_or(&[], |r| &r.users)
    }

    /// The room's managers.
    pub fn managers(&self) -> &[UserId] {
        self.latest().map_or(&[], |r| &r.managers)
    }

    /// The room's policy.
    pub fn policy(&self) -> Policy {
        self.latest().map(|r| r.policy).unwrap_or_default()
    }

    /// How `user` relates to the room now.
    pub fn role_of(&self, user: &UserId) -> Role {
        self.latest().map_or(Role::Outsider, |r| r.role_of(user))
    }
}
