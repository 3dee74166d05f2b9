//! A 3D voice room: bots walk around and talk (a speech clip or tones) and show the moving test
//! pattern on billboards above their heads; you hear each from where it is (HRTF). WASD moves you,
//! the arrow keys turn you; hold V to talk (push-to-talk on your microphone, if there is one), M
//! deafens you.
//!
//! ```sh
//! cargo run --example voice_room                              # in-process bridge, 3 bots, a window
//! cargo run --example voice_room -- --headless --seconds 10    # no window: one JSON line at the end
//! cargo run --example voice_room -- --bridge ws://host:7800     # a real bridge (bots join it too)
//! cargo run --example voice_room -- --seconds 20 --screenshot room.png   # window; save it, exit
//! ```
mod common;

use bevy::prelude::*;
use bevy_streams::prelude::*;

use common::{Args, BotVideo, Bots, Tally};

fn main() {
    let args = Args::parse("voice_room", 3);
    let video = BotVideo::Pattern {
        width: 320,
        height: 240,
        fps: 15,
    };
    let mut app = common::app(&args, "bevy_streams voice room", video);
    if !args.headless {
        app.add_systems(Startup, scene).add_systems(
            Update,
            (walk_listener, show_billboards, push_to_talk, deafen_key),
        );
    }
    app.add_systems(Startup, spawn_listener)
        .add_observer(publish_microphone)
        .add_systems(Update, walk_bots)
        .run();
}

fn spawn_listener(mut commands: Commands) {
    commands.spawn((
        Name::new("listener"),
        StreamListener,
        Transform::from_xyz(0.0, 1.6, 0.0),
    ));
}

/// Once the room's media is joined, the microphone is published muted (push-to-talk opens it). With
/// no microphone this is a logged media error, and the room goes on.
fn publish_microphone(joined: On<Add, RoomMediaLink>, mut commands: Commands, args: Res<Args>) {
    if args.headless {
        return;
    }
    commands.trigger(PublishAudio {
        entity: joined.entity,
        input: AudioInput::Microphone(None),
    });
    commands.trigger(MuteMicrophone {
        entity: joined.entity,
        muted: true,
    });
}

/// Hold V to talk.
fn push_to_talk(mut commands: Commands, keys: Res<ButtonInput<KeyCode>>, tally: Res<Tally>) {
    let Some(room) = tally.room else { return };
    if keys.just_pressed(KeyCode::KeyV) || keys.just_released(KeyCode::KeyV) {
        commands.trigger(MuteMicrophone {
            entity: room,
            muted: !keys.pressed(KeyCode::KeyV),
        });
    }
}

/// M deafens (and M again undeafens).
fn deafen_key(mut commands: Commands, keys: Res<ButtonInput<KeyCode>>, mut deaf: Local<bool>) {
    if keys.just_pressed(KeyCode::KeyM) {
        *deaf = !*deaf;
        commands.trigger(Deafen(*deaf));
    }
}

/// Bots walk in circles around the middle of the room, each on its own radius and pace.
fn walk_bots(
    mut commands: Commands,
    time: Res<Time>,
    participants: Query<(Entity, &Participant, Option<&Transform>)>,
    bots: Option<Res<Bots>>,
) {
    let Some(bots) = bots else { return };
    for (entity, participant, transform) in &participants {
        let Some(i) = bots.users.iter().position(|u| *u == participant.user_id) else {
            continue;
        };
        let t = time.elapsed_secs() * (0.2 + 0.05 * i as f32) + i as f32 * 2.1;
        let radius = 3.0 + 1.5 * i as f32;
        let position = Vec3::new(radius * t.cos(), 1.6, radius * t.sin());
        match transform {
            Some(_) => {
                commands
                    .entity(entity)
                    .insert(Transform::from_translation(position));
            }
            None => {
                commands
                    .entity(entity)
                    .insert((Transform::from_translation(position), Visibility::default()));
            }
        }
    }
}

fn scene(
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    commands.spawn((
        Mesh3d(meshes.add(Plane3d::default().mesh().size(30.0, 30.0))),
        MeshMaterial3d(materials.add(Color::srgb(0.3, 0.5, 0.3))),
    ));
    commands.spawn((
        DirectionalLight {
            illuminance: 8_000.0,
            ..default()
        },
        Transform::from_xyz(4.0, 8.0, 4.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));
    commands.spawn((
        Camera3d::default(),
        Transform::from_xyz(0.0, 6.0, 14.0).looking_at(Vec3::new(0.0, 1.0, 0.0), Vec3::Y),
    ));
}

/// WASD moves the listener (the ears), arrow keys turn it.
fn walk_listener(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    mut listener: Query<&mut Transform, With<StreamListener>>,
) {
    let Ok(mut transform) = listener.single_mut() else {
        return;
    };
    let dt = time.delta_secs();
    let forward = transform.forward().as_vec3();
    let right = transform.right().as_vec3();
    let mut step = Vec3::ZERO;
    for (key, dir) in [
        (KeyCode::KeyW, forward),
        (KeyCode::KeyS, -forward),
        (KeyCode::KeyD, right),
        (KeyCode::KeyA, -right),
    ] {
        if keys.pressed(key) {
            step += dir;
        }
    }
    transform.translation += step.normalize_or_zero() * 4.0 * dt;
    if keys.pressed(KeyCode::ArrowLeft) {
        transform.rotate_y(1.5 * dt);
    }
    if keys.pressed(KeyCode::ArrowRight) {
        transform.rotate_y(-1.5 * dt);
    }
}

/// A billboard with each remote video above its sender's head.
fn show_billboards(
    mut commands: Commands,
    videos: Query<(&RemoteVideo, &RemoteTrack, &TrackOf), Added<RemoteVideo>>,
    rooms: Query<&StreamRoom>,
    index: Res<RoomIndex>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    for (video, track, of) in &videos {
        let Some(participant) = rooms
            .get(of.0)
            .ok()
            .and_then(|room| index.participant(&room.id, &track.user_id))
        else {
            continue;
        };
        let billboard = commands
            .spawn((
                Mesh3d(meshes.add(Rectangle::new(1.6, 1.2))),
                MeshMaterial3d(materials.add(StandardMaterial {
                    base_color_texture: Some(video.image.clone()),
                    unlit: true,
                    double_sided: true,
                    cull_mode: None,
                    ..default()
                })),
                Transform::from_xyz(0.0, 1.2, 0.0),
            ))
            .id();
        commands.entity(participant).add_child(billboard);
    }
}
