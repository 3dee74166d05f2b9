//! A headless lobby: starts the embedded bridge, creates an end-to-end encrypted room with a bot member,
//! joins it, and shows the bot reading the room's private metadata, arriving and leaving — all as ECS
//! entities and messages. Runs with no setup:
//!
//! ```text
//! cargo run --example lobby
//! ```
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::log::LogPlugin;
use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::EventScope;
use bevy_streams::{EmbeddedBridge, Identity, Reply, RoomId};
use crossbeam_channel::Sender;

fn main() {
    App::new()
        .add_plugins((
            MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(16))),
            LogPlugin::default(),
            StreamsPlugin::embedded(),
        ))
        .add_systems(Startup, start_bot)
        .add_observer(create_lobby_when_connected)
        .add_systems(Update, (handle_replies, show_participants, show_events))
        .run();
}

/// A second user, driven by a plain (non-Bevy) client on its own thread.
#[derive(Resource)]
struct Bot {
    user: bevy_streams::UserId,
    room_tx: Sender<RoomId>,
}

fn start_bot(mut commands: Commands, bridge: Res<EmbeddedBridge>) {
    let identity = Identity::generate();
    let user = identity.user_id().clone();
    let url = bridge.url.clone();
    let (room_tx, room_rx) = crossbeam_channel::bounded::<RoomId>(1);
    std::thread::spawn(move || {
        let bot = StreamsClient::start(ClientConfig::new(url, identity)).expect("bot client");
        bot.wait_connected(Duration::from_secs(5))
            .expect("bot connects");
        let Ok(room) = room_rx.recv() else { return };
        let seen = bot.get_room(&room).expect("the bot is a member");
        println!(
            "bot: I can read the room's private name {:?} and metadata {:?}",
            seen.name().unwrap_or_default(),
            String::from_utf8_lossy(seen.private_meta().unwrap_or_default())
        );
        bot.join_room(&room).expect("bot joins");
        std::thread::sleep(Duration::from_millis(800));
        bot.leave_room(&room).expect("bot leaves");
    });
    commands.insert_resource(Bot { user, room_tx });
}

fn create_lobby_when_connected(
    _: On<Add, Connected>,
    mut streams: ResMut<StreamsCommands>,
    bot: Res<Bot>,
    me: Res<LocalUser>,
) {
    println!("connected to the embedded bridge as {}", me.0);
    streams.send(Operation::CreateRoom(NewRoom {
        name: "Lobby".into(),
        users: vec![bot.user.clone()],
        public_meta: b"map: harbor".to_vec(),
        private_meta: b"meet at the lighthouse".to_vec(),
        ..Default::default()
    }));
}

fn handle_replies(
    mut replies: MessageReader<StreamsReply>,
    mut streams: ResMut<StreamsCommands>,
    bot: Res<Bot>,
) {
    for reply in replies.read() {
        match &reply.result {
            Ok(Reply::Room(room)) => {
                println!(
                    "room {:?} created: id {}, key epoch {}, users {}, managers {}",
                    room.name().unwrap_or_default(),
                    room.id,
                    room.key_epoch,
                    room.users.len(),
                    room.managers.len()
                );
                streams.send(Operation::Subscribe(EventScope::Room(room.id.clone())));
                streams.send(Operation::JoinRoom(room.id.clone()));
                let _ = bot.room_tx.send(room.id.clone());
            }
            Ok(_) => {}
            Err(e) => println!("request {} failed: {e}", reply.id),
        }
    }
}

fn show_participants(
    added: Query<(&Participant, &ParticipantOf), Added<Participant>>,
    rooms: Query<(&StreamRoom, Option<&RoomParticipants>)>,
) {
    for (participant, of) in &added {
        let Ok((room, present)) = rooms.get(of.0) else {
            continue;
        };
        let who = if participant.is_local {
            "you"
        } else {
            "the bot"
        };
        println!(
            "{who} joined {:?}: {} participant entit{} now",
            room.name.as_deref().unwrap_or("?"),
            present.map_or(0, |p| p.entities().len()),
            if present.map_or(0, |p| p.entities().len()) == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
}

/// Prints who left, and ends the example once the bot has left.
fn show_events(
    mut events: MessageReader<StreamsRoomEvent>,
    bot: Res<Bot>,
    time: Res<Time>,
    participants: Query<&Participant>,
    mut exit: MessageWriter<AppExit>,
) {
    for StreamsRoomEvent(event) in events.read() {
        if let bevy_streams::RoomEvent::UserLeft { user_id, .. } = event
            && *user_id == bot.user
        {
            println!("the bot left; its participant entity is gone");
            // Despawns are applied at the end of this frame; count what will remain.
            let remaining = participants
                .iter()
                .filter(|p| p.user_id != bot.user)
                .count();
            println!("done: {remaining} participant left in the room (you)");
            exit.write(AppExit::Success);
        }
    }
    if time.elapsed_secs() > 20.0 {
        println!("giving up after 20 s");
        exit.write(AppExit::error());
    }
}
