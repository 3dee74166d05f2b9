//! A video call: every remote video in a 2D grid of UI tiles, framed green while its sender speaks,
//! with its frame rate and size underneath; your own camera (if there is one) in a preview tile. The
//! bots talk (a speech clip or tones) and send the moving test pattern.
//!
//! ```sh
//! cargo run --example video_call                              # in-process bridge, 4 bots, a window
//! cargo run --example video_call -- --headless --seconds 10    # no window: one JSON line at the end
//! cargo run --example video_call -- --bridge ws://host:7800
//! ```
mod common;

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::{RoomIndex, VideoTrackStats};

use common::{Args, BotVideo};

const SPEAKING: Color = Color::srgb(0.2, 0.9, 0.3);
const QUIET: Color = Color::srgb(0.15, 0.15, 0.18);

fn main() {
    let args = Args::parse("video_call", 4);
    let video = BotVideo::Pattern {
        width: 640,
        height: 360,
        fps: 15,
    };
    let mut app = common::app(&args, "bevy_streams video call", video);
    if !args.headless {
        app.add_systems(Startup, grid)
            .add_observer(publish_camera)
            .add_systems(
                Update,
                (add_tiles, add_preview_tile, highlight_speakers, show_stats),
            );
    }
    app.run();
}

/// The grid every tile goes into.
#[derive(Component)]
struct Grid;

/// A tile showing a remote video track (the entity) of a participant (the user id).
#[derive(Component)]
struct Tile {
    track: Entity,
}

/// The caption under a tile.
#[derive(Component)]
struct Caption {
    track: Entity,
}

fn grid(mut commands: Commands) {
    commands.spawn(Camera2d);
    commands.spawn((
        Grid,
        Node {
            width: percent(100),
            height: percent(100),
            display: Display::Grid,
            grid_template_columns: RepeatedGridTrack::flex(3, 1.0),
            grid_auto_rows: vec![GridTrack::px(300.0)],
            column_gap: px(8),
            row_gap: px(8),
            padding: UiRect::all(px(8)),
            ..default()
        },
        BackgroundColor(Color::srgb(0.05, 0.05, 0.07)),
    ));
}

fn tile(commands: &mut Commands, grid: Entity, track: Entity, image: Handle<Image>, label: String) {
    let tile = commands
        .spawn((
            Tile { track },
            Node {
                flex_direction: FlexDirection::Column,
                border: UiRect::all(px(4)),
                ..default()
            },
            BorderColor::all(QUIET),
            BackgroundColor(Color::BLACK),
            ChildOf(grid),
        ))
        .id();
    commands.spawn((
        ImageNode::new(image),
        Node {
            width: percent(100),
            flex_grow: 1.0,
            ..default()
        },
        ChildOf(tile),
    ));
    commands.spawn((
        Caption { track },
        Text::new(label),
        TextFont::from_font_size(14.0),
        ChildOf(tile),
    ));
}

/// A tile for each new remote video.
fn add_tiles(
    mut commands: Commands,
    grid: Single<Entity, With<Grid>>,
    videos: Query<(Entity, &RemoteVideo, &RemoteTrack), Added<RemoteVideo>>,
) {
    for (entity, video, track) in &videos {
        let short = &track.user_id.as_str()[..8];
        tile(
            &mut commands,
            *grid,
            entity,
            video.image.clone(),
            short.to_string(),
        );
    }
}

/// Your camera, published with a preview, once the room's media is joined (a media error, logged,
/// where there is no camera).
fn publish_camera(joined: On<Add, RoomMediaLink>, mut commands: Commands) {
    commands.trigger(PublishVideo {
        entity: joined.entity,
        input: VideoInput::Camera { index: 0, fps: 15 },
        preview: true,
    });
}

fn add_preview_tile(
    mut commands: Commands,
    grid: Single<Entity, With<Grid>>,
    previews: Query<(Entity, &LocalPreview), Added<LocalPreview>>,
) {
    for (entity, preview) in &previews {
        tile(
            &mut commands,
            *grid,
            entity,
            preview.image.clone(),
            "you".into(),
        );
    }
}

/// Frames a tile green while its sender speaks; removes tiles whose track ended.
fn highlight_speakers(
    mut commands: Commands,
    mut tiles: Query<(Entity, &Tile, &mut BorderColor)>,
    tracks: Query<(&RemoteTrack, &TrackOf)>,
    local: Query<(), With<LocalTrack>>,
    rooms: Query<&StreamRoom>,
    index: Res<RoomIndex>,
    speaking: Query<(), With<Speaking>>,
) {
    for (tile, Tile { track }, mut border) in &mut tiles {
        let Ok((remote, of)) = tracks.get(*track) else {
            if local.get(*track).is_err() {
                commands.entity(tile).despawn();
            }
            continue;
        };
        let talking = rooms
            .get(of.0)
            .ok()
            .and_then(|room| index.participant(&room.id, &remote.user_id))
            .is_some_and(|p| speaking.get(p).is_ok());
        let color = if talking { SPEAKING } else { QUIET };
        if border.top != color {
            *border = BorderColor::all(color);
        }
    }
}

/// Frame rate and size under each remote tile.
fn show_stats(
    mut captions: Query<(&Caption, &mut Text)>,
    tracks: Query<(&RemoteTrack, &VideoTrackStats), Changed<VideoTrackStats>>,
) {
    for (caption, mut text) in &mut captions {
        if let Ok((track, stats)) = tracks.get(caption.track) {
            let s = &stats.0;
            let short = &track.user_id.as_str()[..8];
            text.0 = format!(
                "{short}  {}x{}  {:.0} fps  {} freezes",
                s.width, s.height, s.fps, s.freezes
            );
        }
    }
}
