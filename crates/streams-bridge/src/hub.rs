//! [`Hub`]: the bridge's in-memory state shared by connections — who is connected, which event scopes
//! each connection subscribed to, and who is present in which room — and the fan-out of events.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use streams_proto::wire::{Event, EventScope, ServerMessage};
use streams_proto::{ContextId, RoomId, UserId};
use tokio::sync::{Notify, mpsc};

/// Identifies one WebSocket connection.
pub type ConnId = u64;

/// How many outgoing messages may queue for one connection before it is disconnected as too slow.
pub const OUTBOX_CAPACITY: usize = 1024;

struct Conn {
    user: UserId,
    /// `None` while the connection is parked for a resume (its events are dropped; the client
    /// reads what it missed when it is back).
    outbox: Option<mpsc::Sender<ServerMessage>>,
    kick: Arc<Notify>,
    scopes: HashSet<EventScope>,
}

/// Connections, subscriptions and presence.
#[derive(Default)]
pub struct Hub {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    presence: HashMap<RoomId, BTreeMap<UserId, HashSet<ConnId>>>,
}

impl Hub {
    /// Registers an authenticated connection.
    pub fn register(
        &mut self,
        user: UserId,
        outbox: mpsc::Sender<ServerMessage>,
        kick: Arc<Notify>,
    ) -> ConnId {
        self.next_id += 1;
        self.conns.insert(
            self.next_id,
            Conn {
                user,
                outbox: Some(outbox),
                kick,
                scopes: HashSet::new(),
            },
        );
        self.next_id
    }

    /// Whether `conn` is registered (live or kept for a resume).
    pub fn contains(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// A connection dropped and is kept for a resume: its subscriptions and presence stay, its
    /// events go nowhere.
    pub fn detach(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox = None;
        }
    }

    /// A new connection takes over the parked `conn` (if it is still registered).
    pub fn reattach(
        &mut self,
        conn: ConnId,
        outbox: mpsc::Sender<ServerMessage>,
        kick: Arc<Notify>,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox = Some(outbox);
            c.kick = kick;
        }
    }

    /// Forgets a connection; returns the rooms its user has now left entirely.
    pub fn unregister(&mut self, conn: ConnId) -> Vec<(RoomId, UserId)> {
        let rooms: Vec<RoomId> = self
            .presence
            .iter()
            .filter(|(_, users)| users.values().any(|c| c.contains(&conn)))
            .map(|(room, _)| room.clone())
            .collect();
        let mut left = Vec::new();
        for room in rooms {
            if let Some(user) = self.leave(conn, &room) {
                left.push((room, user));
            }
        }
        self.conns.remove(&conn);
        left
    }

    /// Adds an event scope to a connection.
    pub fn subscribe(&mut self, conn: ConnId, scope: EventScope) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.scopes.insert(scope);
        }
    }

    /// Removes an event scope from a connection.
    pub fn unsubscribe(&mut self, conn: ConnId, scope: &EventScope) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.scopes.remove(scope);
        }
    }

    /// Marks the connection's user present; `true` if the user was not present before.
    pub fn join(&mut self, conn: ConnId, room: &RoomId) -> bool {
        let Some(user) = self.conns.get(&conn).map(|c| c.user.clone()) else {
            return false;
        };
        let conns = self
            .presence
            .entry(room.clone())
            .or_default()
            .entry(user)
            .or_default();
        let first = conns.is_empty();
        conns.insert(conn);
        first
    }

    /// Removes the connection from a room; returns the user if they have no other connection there.
    pub fn leave(&mut self, conn: ConnId, room: &RoomId) -> Option<UserId> {
        let users = self.presence.get_mut(room)?;
        let user = users
            .iter()
            .find(|(_, conns)| conns.contains(&conn))
            .map(|(u, _)| u.clone())?;
        let conns = users.get_mut(&user)?;
        conns.remove(&conn);
        let gone = conns.is_empty();
        if gone {
            users.remove(&user);
        }
        if users.is_empty() {
            self.presence.remove(room);
        }
        gone.then_some(user)
    }

    /// Removes a user from a room's presence (they were removed from the room); `true` if present.
    pub fn evict(&mut self, room: &RoomId, user: &UserId) -> bool {
        let Some(users) = self.presence.get_mut(room) else {
            return false;
        };
        let was = users.remove(user).is_some();
        if users.is_empty() {
            self.presence.remove(room);
        }
        was
    }

    /// Forgets all presence in a deleted room.
    pub fn drop_room(&mut self, room: &RoomId) {
        self.presence.remove(room);
    }

    /// The users present in a room.
    pub fn participants(&self, room: &RoomId) -> Vec<UserId> {
        self.presence
            .get(room)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Sends `event` to every connection whose user is in `audience` and that subscribed to the room or
    /// its context. A connection whose outbox is full is disconnected (it resynchronises on reconnect)
    /// rather than slowing everyone else down.
    pub fn publish(&mut self, event: &Event, context: &ContextId, audience: &[UserId]) {
        let room_scope = EventScope::Room(event.room_id().clone());
        let context_scope = EventScope::Context(context.clone());
        for conn in self.conns.values() {
            if !audience.contains(&conn.user)
                || !(conn.scopes.contains(&room_scope) || conn.scopes.contains(&context_scope))
            {
                continue;
            }
            let Some(outbox) = &conn.outbox else {
                continue;
            };
            let message = ServerMessage::Event {
                event: event.clone(),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(message) {
                tracing::warn!(user = %conn.user, "event outbox full; disconnecting slow client");
                conn.kick.notify_one();
            }
        }
    }
}
