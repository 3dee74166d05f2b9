//! [`StreamsSystems::Receive`](crate::StreamsSystems::Receive): drains client events (capped per frame)
//! into the session state, room and participant entities, [`StreamsReply`] messages and
//! [`StreamsRoomEvent`] messages and observer triggers.
use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use crossbeam_channel::TryRecvError;
use streams_client::{
    ClientError, ClientEvent, ConnectionState, Reply, RequestId, Room, RoomEvent,
};
use streams_proto::{RoomId, UserId};

use crate::commands::ClientResource;
use crate::rooms::{Joined, Participant, ParticipantOf, Recording, RoomIndex, StreamRoom};
use crate::session::{LocalUser, StreamsSession, set_state};

/// How many client events [`receive_events`] takes per frame (the plugin's `events_per_frame`).
#[derive(Resource)]
pub(crate) struct EventBudget(pub usize);

/// The outcome of an operation queued with [`crate::StreamsCommands::send`].
#[derive(Message, Debug, Clone)]
pub struct StreamsReply {
    /// The id `send` returned.
    pub id: RequestId,
    /// The outcome.
    pub result: Result<Reply, ClientError>,
}

/// A room, presence or stream event (already applied to the entities): a message, and a trigger for
/// observers (`app.add_observer(|event: On<StreamsRoomEvent>| …)`).
#[derive(Message, Event, Debug, Clone)]
pub struct StreamsRoomEvent(pub RoomEvent);

/// Whether the client channel has been found closed (reported once).
#[derive(Resource, Default)]
pub(crate) struct ChannelClosed(bool);

pub(crate) fn receive_events(
    client: Option<Res<ClientResource>>,
    budget: Res<EventBudget>,
    mut closed: ResMut<ChannelClosed>,
    sessions: Query<Entity, With<StreamsSession>>,
    mut apply: RoomApplier,
    mut replies: MessageWriter<StreamsReply>,
    mut room_events: MessageWriter<StreamsRoomEvent>,
) {
    let Some(client) = client else {
        return;
    };
    let session = sessions.single().ok();
    for _ in 0..budget.0 {
        let event = match client.client.events().try_recv() {
            Ok(event) => event,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => {
                if !closed.0 {
                    closed.0 = true;
                    error!("streams client stopped");
                    if let Some(session) = session {
                        set_state(
                            &mut apply.commands,
                            session,
                            ConnectionState::Disconnected {
                                reason: "the streams client stopped".into(),
                                error: None,
                            },
                        );
                    }
                }
                return;
            }
        };
        match event {
            ClientEvent::Connection(state) => {
                if let Some(session) = session {
                    set_state(&mut apply.commands, session, state);
                }
            }
            ClientEvent::Reply { id, result } => {
                if let Ok(reply) = &result {
                    apply.reply(reply);
                }
                replies.write(StreamsReply { id, result });
            }
            ClientEvent::Room(event) => {
                apply.event(&event);
                apply.commands.trigger(StreamsRoomEvent(event.clone()));
                room_events.write(StreamsRoomEvent(event));
            }
        }
    }
}

/// Applies replies and events to entities. Participants are tracked in [`RoomIndex`] as they are
/// spawned, so several events in one frame never duplicate or miss an entity.
#[derive(SystemParam)]
pub(crate) struct RoomApplier<'w, 's> {
    commands: Commands<'w, 's>,
    index: ResMut<'w, RoomIndex>,
    rooms: Query<'w, 's, &'static mut StreamRoom>,
    local: Res<'w, LocalUser>,
}

impl RoomApplier<'_, '_> {
    fn reply(&mut self, reply: &Reply) {
        match reply {
            Reply::Room(room) => {
                self.upsert(room);
            }
            Reply::Rooms(page) => {
                for room in &page.rooms {
                    self.upsert(room);
                }
            }
            Reply::Participants { room_id, users } => self.sync_participants(room_id, users),
            Reply::Done
            | Reply::Answer { .. }
            | Reply::Streams(_)
            | Reply::Recordings(_)
            | Reply::RecordingChunk { .. }
            | Reply::TurnServers(_) => {}
        }
    }

    fn event(&mut self, event: &RoomEvent) {
        match event {
            RoomEvent::Created(room) | RoomEvent::Updated(room) => {
                self.upsert(room);
            }
            RoomEvent::Deleted { room_id, .. } | RoomEvent::RemovedFrom { room_id, .. } => {
                if let Some(entity) = self.index.remove(room_id) {
                    // Participants go with it (linked spawn).
                    self.commands.entity(entity).despawn();
                }
            }
            RoomEvent::UserJoined { room_id, user_id } => self.add_participant(room_id, user_id),
            RoomEvent::UserLeft { room_id, user_id } => self.remove_participant(room_id, user_id),
            // Media streams become entities with the plugin's media work; for now they arrive as
            // messages only.
            RoomEvent::StreamPublished { .. }
            | RoomEvent::StreamUpdated { .. }
            | RoomEvent::StreamUnpublished { .. }
            | RoomEvent::Subscribed { .. }
            | RoomEvent::Unsubscribed { .. } => {}
            // Only media engines' taps get it.
            RoomEvent::Resync { .. } => {}
            RoomEvent::RecordingChanged {
                room_id,
                recording_id,
                recording,
                ..
            } => {
                if let Some(room) = self.index.get(room_id) {
                    if *recording {
                        self.commands.entity(room).insert(Recording {
                            recording_id: recording_id.clone(),
                        });
                    } else {
                        self.commands.entity(room).remove::<Recording>();
                    }
                }
            }
            RoomEvent::Rejected { room_id, error } => {
                warn!("room {room_id} failed verification: {error}");
            }
        }
    }

    fn upsert(&mut self, room: &Room) -> Entity {
        let component = StreamRoom::from(room);
        if let Some(entity) = self.index.get(&room.id) {
            if let Ok(mut existing) = self.rooms.get_mut(entity) {
                *existing = component;
            } else {
                self.commands.entity(entity).insert(component);
            }
            entity
        } else {
            let entity = self
                .commands
                .spawn((component, Name::new(format!("room {}", room.id))))
                .id();
            self.index.insert(room.id.clone(), entity);
            entity
        }
    }

    fn add_participant(&mut self, room_id: &RoomId, user: &UserId) {
        let Some(room) = self.index.get(room_id) else {
            return;
        };
        if self.index.participant(room_id, user).is_some() {
            return;
        }
        let is_local = user == &self.local.0;
        let short = &user.as_str()[..8.min(user.as_str().len())];
        let entity = self
            .commands
            .spawn((
                Participant {
                    user_id: user.clone(),
                    is_local,
                },
                ParticipantOf(room),
                Name::new(format!("participant {short}")),
            ))
            .id();
        self.index
            .add_participant(room_id.clone(), user.clone(), entity);
        if is_local {
            self.commands.entity(room).insert(Joined);
        }
    }

    fn remove_participant(&mut self, room_id: &RoomId, user: &UserId) {
        if let Some(entity) = self.index.remove_participant(room_id, user) {
            self.commands.entity(entity).despawn();
        }
        if user == &self.local.0
            && let Some(room) = self.index.get(room_id)
        {
            self.commands.entity(room).remove::<Joined>();
        }
    }

    /// Makes the room's participant entities match `users` (join and participant-list replies).
    fn sync_participants(&mut self, room_id: &RoomId, users: &[UserId]) {
        let gone: Vec<UserId> = self
            .index
            .participants(room_id)
            .filter(|(u, _)| !users.contains(u))
            .map(|(u, _)| u.clone())
            .collect();
        for user in gone {
            self.remove_participant(room_id, &user);
        }
        for user in users {
            self.add_participant(room_id, user);
        }
    }
}
