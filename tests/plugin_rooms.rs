//! The plugin in a headless app against the embedded bridge: connection state markers, room and
//! participant entities, replies and events as messages, cleanup on delete.
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::EventScope;
use bevy_streams::{EmbeddedBridge, Identity, Reply};

/// Runs frames until `done` holds (the client works on its own threads, so this waits on wall time,
/// sleeping a little between frames so as not to take the cores those threads need).
fn update_until(app: &mut App, what: &str, mut done: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        app.update();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[derive(Resource, Default)]
struct Seen {
    replies: Vec<StreamsReply>,
    events: Vec<StreamsRoomEvent>,
}

fn record(
    mut seen: ResMut<Seen>,
    mut replies: MessageReader<StreamsReply>,
    mut events: MessageReader<StreamsRoomEvent>,
) {
    seen.replies.extend(replies.read().cloned());
    seen.events.extend(events.read().cloned());
}

fn count<C: Component>(app: &mut App) -> usize {
    app.world_mut().query::<&C>().iter(app.world()).count()
}

#[test]
fn rooms_and_participants_become_entities() {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, StreamsPlugin::embedded()))
        .init_resource::<Seen>()
        .add_systems(Update, record);

    update_until(&mut app, "connection", |app| count::<Connected>(app) == 1);
    assert_eq!(
        count::<Connecting>(&mut app),
        0,
        "state markers are exclusive"
    );
    assert_eq!(count::<Disconnected>(&mut app), 0);

    // A second user on the same embedded bridge.
    let url = app.world().resource::<EmbeddedBridge>().url.clone();
    let bot_identity = Identity::generate();
    let bot = StreamsClient::start(ClientConfig::new(url, bot_identity.clone())).unwrap();
    bot.wait_connected(Duration::from_secs(30)).unwrap();

    let create = app
        .world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::CreateRoom(NewRoom {
            name: "Arena".into(),
            users: vec![bot_identity.user_id().clone()],
            private_meta: b"spawn at north gate".to_vec(),
            ..Default::default()
        }));
    update_until(&mut app, "the room entity", |app| {
        count::<StreamRoom>(app) == 1
    });
    let room = app
        .world_mut()
        .query::<&StreamRoom>()
        .single(app.world())
        .unwrap()
        .clone();
    assert_eq!(room.name.as_deref(), Some("Arena"));
    assert_eq!(
        room.private_meta.as_deref(),
        Some(&b"spawn at north gate"[..])
    );
    let reply = app
        .world()
        .resource::<Seen>()
        .replies
        .iter()
        .find(|r| r.id == create)
        .cloned()
        .expect("the create reply arrives as a message");
    assert!(matches!(reply.result, Ok(Reply::Room(_))));

    {
        let mut streams = app.world_mut().resource_mut::<StreamsCommands>();
        streams.send(Operation::Subscribe(EventScope::Room(room.id.clone())));
        streams.send(Operation::JoinRoom(room.id.clone()));
    }
    update_until(&mut app, "our own participant", |app| {
        count::<Participant>(app) == 1 && count::<Joined>(app) == 1
    });

    bot.join_room(&room.id).unwrap();
    update_until(&mut app, "the bot's participant", |app| {
        count::<Participant>(app) == 2
    });
    let room_entity = app.world().resource::<RoomIndex>().get(&room.id).unwrap();
    let participants = app
        .world()
        .entity(room_entity)
        .get::<RoomParticipants>()
        .unwrap()
        .entities()
        .len();
    assert_eq!(participants, 2, "participants are related to their room");
    let locals: Vec<bool> = app
        .world_mut()
        .query::<&Participant>()
        .iter(app.world())
        .map(|p| p.is_local)
        .collect();
    assert_eq!(locals.iter().filter(|l| **l).count(), 1);

    // The bot disconnects: its participant entity goes away.
    drop(bot);
    update_until(&mut app, "the bot to leave", |app| {
        count::<Participant>(app) == 1
    });

    // Deleting the room despawns it and its participants.
    app.world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::DeleteRoom(room.id.clone()));
    update_until(&mut app, "the room to go", |app| {
        count::<StreamRoom>(app) == 0 && count::<Participant>(app) == 0
    });
    let seen = app.world().resource::<Seen>();
    assert!(
        seen.events
            .iter()
            .any(|e| matches!(&e.0, bevy_streams::RoomEvent::UserJoined { user_id, .. } if user_id == bot_identity.user_id()))
    );
}

#[test]
fn an_unreachable_bridge_is_a_disconnected_state_not_a_panic() {
    // Nothing listens on port 9 of loopback.
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, StreamsPlugin::url("ws://127.0.0.1:9")));
    update_until(&mut app, "a disconnected state", |app| {
        count::<Disconnected>(app) == 1
    });
    let reason = app
        .world_mut()
        .query::<&Disconnected>()
        .single(app.world())
        .unwrap()
        .reason
        .clone();
    assert!(reason.contains("cannot reach"), "{reason}");
    // An operation sent meanwhile fails with a typed reply instead of hanging or panicking.
    let id = app
        .world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::ListRooms {
            context_id: None,
            paging: Default::default(),
        });
    app.init_resource::<Seen>().add_systems(Update, record);
    update_until(&mut app, "the failed reply", |app| {
        app.world()
            .resource::<Seen>()
            .replies
            .iter()
            .any(|r| r.id == id)
    });
    let reply = app
        .world()
        .resource::<Seen>()
        .replies
        .iter()
        .find(|r| r.id == id)
        .unwrap()
        .clone();
    assert!(reply.result.is_err());
}
