//! Room and participant entities: a [`StreamRoom`] per known room, a [`Participant`] per present user
//! related to its room by [`ParticipantOf`] (despawning a room despawns its participants), and the
//! [`RoomIndex`] from room id to entity.
use std::collections::HashMap;

use bevy::prelude::*;
use streams_client::Room;
use streams_proto::{RoomId, UserId};

/// A Stream Room this user can see.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct StreamRoom {
    /// The room id.
    pub id: RoomId,
    /// Display name (decrypted), `None` if this user cannot read it.
    pub name: Option<String>,
    /// Version for updates.
    pub version: u64,
    /// Current key epoch.
    pub key_epoch: u64,
    /// Users.
    pub users: Vec<UserId>,
    /// Managers.
    pub managers: Vec<UserId>,
    /// Public metadata.
    pub public_meta: Vec<u8>,
    /// Private metadata (decrypted), `None` if this user cannot read it.
    pub private_meta: Option<Vec<u8>>,
}

impl From<&Room> for StreamRoom {
    fn from(room: &Room) -> Self {
        StreamRoom {
            id: room.id.clone(),
            name: room.name().map(str::to_string),
            version: room.version,
            key_epoch: room.key_epoch,
            users: room.users.clone(),
            managers: room.managers.clone(),
            public_meta: room.public_meta.clone(),
            private_meta: room.private_meta().map(<[u8]>::to_vec),
        }
    }
}

/// On a room while it is being recorded (show it to the players). Recording stays end-to-end
/// encrypted: the bridge stores ciphertext; members export it (`streams export`).
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// The recording's id.
    pub recording_id: String,
}

/// Marks a room this client has joined.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined;

/// A user present in a room.
#[derive(Component, Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Who.
    pub user_id: UserId,
    /// Whether it is this client's user.
    pub is_local: bool,
}

/// The room a participant is in.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
#[relationship(relationship_target = RoomParticipants)]
pub struct ParticipantOf(pub Entity);

/// The participants of a room (despawned with it).
#[derive(Component, Debug, Default)]
#[relationship_target(relationship = ParticipantOf, linked_spawn)]
pub struct RoomParticipants(Vec<Entity>);

impl RoomParticipants {
    /// The participant entities.
    pub fn entities(&self) -> &[Entity] {
        &self.0
    }
}

/// Room id → entity, and each room's participants by user id → entity.
#[derive(Resource, Debug, Default)]
pub struct RoomIndex {
    by_id: HashMap<RoomId, Entity>,
    present: HashMap<RoomId, HashMap<UserId, Entity>>,
}

impl RoomIndex {
    /// The entity of a room.
    pub fn get(&self, id: &RoomId) -> Option<Entity> {
        self.by_id.get(id).copied()
    }

    /// How many rooms are known.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no room is known.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The participant entity of `user` in a room.
    pub fn participant(&self, room: &RoomId, user: &UserId) -> Option<Entity> {
        self.present.get(room)?.get(user).copied()
    }

    /// The users present in a room.
    pub fn participants(&self, room: &RoomId) -> impl Iterator<Item = (&UserId, Entity)> {
        self.present
            .get(room)
            .into_iter()
            .flat_map(|users| users.iter().map(|(u, e)| (u, *e)))
    }

    pub(crate) fn insert(&mut self, id: RoomId, entity: Entity) {
        self.by_id.insert(id, entity);
    }

    pub(crate) fn remove(&mut self, id: &RoomId) -> Option<Entity> {
        self.present.remove(id);
        self.by_id.remove(id)
    }

    pub(crate) fn add_participant(&mut self, room: RoomId, user: UserId, entity: Entity) {
        self.present.entry(room).or_default().insert(user, entity);
    }

    pub(crate) fn remove_participant(&mut self, room: &RoomId, user: &UserId) -> Option<Entity> {
        self.present.get_mut(room)?.remove(user)
    }
}
