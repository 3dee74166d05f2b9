//! Room crypto on the client side: building signed create/update requests, and verifying and decrypting
//! what the bridge serves. Remembers each room's verified chain head to refuse rollbacks and forks.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use streams_proto::epoch::Membership;
use streams_proto::policy::Role;
use streams_proto::wire::Request;
use streams_proto::{
    ContextId, CryptoError, EpochRecord, Identity, PrivateMeta, RoomId, RoomRecord, SignedMeta,
    UserId, VerifiedChain, verify_chain,
};

use crate::api::{NewRoom, Room, RoomUpdate};
use crate::error::ClientError;

/// What this client has verified of one room: its chain head and the newest metadata version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    chain: VerifiedChain,
    meta_version: u64,
}

/// Rooms verified so far: their chain heads and newest metadata versions. A bridge that later serves a
/// fork, an older chain or older metadata is refused. Kept in a file (owner-only) when one is given, so
/// the protection survives restarts — each `streams` command is a new process.
#[derive(Default)]
pub struct TrustStore {
    seen: Mutex<HashMap<RoomId, Seen>>,
    file: Option<PathBuf>,
}

impl TrustStore {
    /// A store kept only in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A store backed by `path` (created when first written). An unreadable file is an error: silently
    /// starting over would drop the rollback protection.
    pub fn open(path: PathBuf) -> Result<Self, ClientError> {
        let seen = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Invalid(format!("trust file {} is corrupt: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                return Err(ClientError::Invalid(format!(
                    "cannot read trust file {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(TrustStore {
            seen: Mutex::new(seen),
            file: Some(path),
        })
    }

    fn save(&self, seen: &HashMap<RoomId, Seen>) {
        let Some(path) = &self.file else { return };
        let result = (|| -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            std::io::Write::write_all(&mut file, &serde_json::to_vec(seen)?)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            tracing::warn!("cannot save trust file {}: {e}", path.display());
        }
    }

    /// Verifies a served room and decrypts what this identity may read.
    pub fn open_room(&self, identity: &Identity, record: RoomRecord) -> Result<Room, ClientError> {
        let verified = verify_chain(&record.id, &record.epochs)?;
        let latest = record
            .latest()
            .ok_or_else(|| ClientError::Unexpected("room without epochs".into()))?;
        record.meta.verify(latest)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(before) = seen.get(&record.id)
                && (!before.chain.is_extended_by(&record.epochs)
                    || record.meta.version < before.meta_version)
            {
                return Err(CryptoError::ChainRollback {
                    room: record.id.clone(),
                }
                .into());
            }
            let changed = seen.get(&record.id).map(|s| (&s.chain, s.meta_version))
                != Some((&verified, record.meta.version));
            if changed {
                seen.insert(
                    record.id.clone(),
                    Seen {
                        chain: verified,
                        meta_version: record.meta.version,
                    },
                );
                self.save(&seen);
            }
        }
        let role = latest.role_of(identity.user_id());
        let private = if role == Role::Outsider {
            None
        } else {
            let secret = latest.unwrap_secret(identity)?;
            Some(record.meta.open(&secret)?)
        };
        let creator = record.epochs[0].author.clone();
        Ok(Room {
            id: record.id.clone(),
            context_id: record.context_id.clone(),
            created_at: record.created_at,
            created_by: creator,
            modified_at: record.modified_at,
            modified_by: record.meta.author.clone(),
            version: record.meta.version,
            users: latest.users.clone(),
            managers: latest.managers.clone(),
            policy: latest.policy,
            key_epoch: latest.epoch,
            public_meta: record.meta.public_meta.0.clone(),
            private,
            role,
            record,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Builds the signed genesis epoch and metadata of a new room.
pub fn create_request(identity: &Identity, new: &NewRoom) -> Result<Request, ClientError> {
    let membership = Membership {
        users: new.users.clone(),
        managers: new.managers.clone(),
        policy: new.policy.unwrap_or_default(),
    };
    let (genesis, secret) = EpochRecord::genesis(
        identity,
        new.context_id.clone().unwrap_or_default(),
        membership,
        now_ms(),
    )?;
    let private = PrivateMeta {
        name: new.name.clone(),
        data: new.private_meta.clone().into(),
    };
    let meta = SignedMeta::seal(
        identity,
        &genesis,
        &secret,
        1,
        new.public_meta.clone(),
        &private,
    )?;
    Ok(Request::CreateRoom {
        genesis: Box::new(genesis),
        meta: Box::new(meta),
    })
}

fn apply(list: &[UserId], add: &[UserId], remove: &[UserId]) -> Vec<UserId> {
    let mut out: Vec<UserId> = list
        .iter()
        .chain(add)
        .filter(|u| !remove.contains(u))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Builds the signed update of a room from its current, verified state.
pub fn update_request(
    identity: &Identity,
    current: &Room,
    update: &RoomUpdate,
) -> Result<Request, ClientError> {
    let latest = current
        .record
        .latest()
        .ok_or_else(|| ClientError::Unexpected("room without epochs".into()))?;
    let membership = Membership {
        users: apply(&latest.users, &update.add_users, &update.remove_users),
        managers: apply(
            &latest.managers,
            &update.add_managers,
            &update.remove_managers,
        ),
        policy: update.policy.unwrap_or(latest.policy),
    };
    if membership.managers.is_empty() {
        return Err(ClientError::Invalid(
            "a room needs at least one manager".into(),
        ));
    }
    let new_epoch = update.rotate_key || membership != latest.membership();
    let (epoch, record, secret) = if new_epoch {
        if current.role != Role::Manager {
            return Err(ClientError::Forbidden(
                "only managers change members, policy or keys".into(),
            ));
        }
        let (next, secret) = latest.next(identity, membership, now_ms())?;
        (Some(next.clone()), next, secret)
    } else {
        (None, latest.clone(), latest.unwrap_secret(identity)?)
    };
    let old = current.private.clone().ok_or(CryptoError::NotAMember {
        epoch: latest.epoch,
    })?;
    let private = PrivateMeta {
        name: update.name.clone().unwrap_or(old.name),
        data: update
            .private_meta
            .clone()
            .map(Into::into)
            .unwrap_or(old.data),
    };
    let public = update
        .public_meta
        .clone()
        .unwrap_or_else(|| current.public_meta.clone());
    let meta = SignedMeta::seal(
        identity,
        &record,
        &secret,
        current.version + 1,
        public,
        &private,
    )?;
    Ok(Request::UpdateRoom {
        room_id: current.id.clone(),
        version: update.version.unwrap_or(current.version),
        force: update.force,
        epoch: epoch.map(Box::new),
        meta: Box::new(meta),
    })
}

/// The default context.
pub fn context_or_default(context: Option<ContextId>) -> ContextId {
    context.unwrap_or_default()
}
