//! Screen sharing: a bot presents its screen (the X display when there is one, else the moving test
//! pattern sent as a screen track) on a big monitor in a 3D room; press P to share your own screen
//! (your local preview shows on the small monitor beside it; again P stops it).
//!
//! ```sh
//! cargo run --example screen_share                              # in-process bridge, a window
//! cargo run --example screen_share -- --headless --seconds 10    # no window: one JSON line
//! cargo run --example screen_share -- --bridge ws://host:7800
//! ```
mod common;

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_proto::wire::TrackKind;

use common::{Args, BotVideo, Tally};

fn main() {
    let args = Args::parse("screen_share", 1);
    let mut app = common::app(
        &args,
        "bevy_streams screen share",
        BotVideo::Screen { fps: 10 },
    );
    if !args.headless {
        app.add_systems(Startup, scene)
            .add_systems(Update, (show_on_monitor, show_preview, share_key));
    }
    app.run();
}

/// The big monitor (remote screens) and the small one (your own, previewed).
#[derive(Component)]
struct Monitor {
    local: bool,
}

fn scene(
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    commands.spawn((
        Mesh3d(meshes.add(Plane3d::default().mesh().size(20.0, 20.0))),
        MeshMaterial3d(materials.add(Color::srgb(0.25, 0.25, 0.3))),
    ));
    let screen = |width: f32| Rectangle::new(width, width * 9.0 / 16.0);
    let blank = StandardMaterial {
        base_color: Color::srgb(0.05, 0.05, 0.05),
        unlit: true,
        ..default()
    };
    commands.spawn((
        Monitor { local: false },
        Mesh3d(meshes.add(screen(6.4))),
        MeshMaterial3d(materials.add(blank.clone())),
        Transform::from_xyz(-0.8, 2.2, 0.0),
    ));
    commands.spawn((
        Monitor { local: true },
        Mesh3d(meshes.add(screen(2.4))),
        MeshMaterial3d(materials.add(blank)),
        Transform::from_xyz(3.9, 1.2, 0.6).with_rotation(Quat::from_rotation_y(-0.5)),
    ));
    commands.spawn((
        DirectionalLight {
            illuminance: 6_000.0,
            ..default()
        },
        Transform::from_xyz(3.0, 8.0, 6.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));
    commands.spawn((
        Camera3d::default(),
        StreamListener,
        Transform::from_xyz(0.5, 2.4, 7.5).looking_at(Vec3::new(0.5, 1.8, 0.0), Vec3::Y),
    ));
}

/// Puts an image on a monitor's material (the texture is written in place from then on).
fn put_on(
    monitor: &MeshMaterial3d<StandardMaterial>,
    image: &Handle<Image>,
    materials: &mut Assets<StandardMaterial>,
) {
    if let Some(mut material) = materials.get_mut(&monitor.0) {
        material.base_color = Color::WHITE;
        material.base_color_texture = Some(image.clone());
    }
}

/// The newest remote screen share goes on the big monitor.
fn show_on_monitor(
    screens: Query<(&RemoteVideo, &RemoteTrack), Added<RemoteVideo>>,
    monitors: Query<(&Monitor, &MeshMaterial3d<StandardMaterial>)>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    for (video, track) in &screens {
        if track.kind != TrackKind::Screen {
            continue;
        }
        for (monitor, material) in &monitors {
            if !monitor.local {
                put_on(material, &video.image, &mut materials);
            }
        }
    }
}

/// Your own share's preview goes on the small monitor.
fn show_preview(
    previews: Query<&LocalPreview, Added<LocalPreview>>,
    monitors: Query<(&Monitor, &MeshMaterial3d<StandardMaterial>)>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    for preview in &previews {
        for (monitor, material) in &monitors {
            if monitor.local {
                put_on(material, &preview.image, &mut materials);
            }
        }
    }
}

/// P shares your screen (with a preview); P again stops sharing.
fn share_key(
    mut commands: Commands,
    keys: Res<ButtonInput<KeyCode>>,
    tally: Res<Tally>,
    shares: Query<(Entity, &LocalTrack)>,
) {
    let Some(room) = tally.room else { return };
    if !keys.just_pressed(KeyCode::KeyP) {
        return;
    }
    let mut stopped = false;
    for (entity, track) in &shares {
        if track.kind == TrackKind::Screen {
            commands.trigger(Unpublish { entity });
            stopped = true;
        }
    }
    if !stopped {
        commands.trigger(PublishVideo {
            entity: room,
            input: VideoInput::Screen { fps: 10 },
            preview: true,
        });
    }
}
