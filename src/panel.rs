//! The optional egui panel (feature `egui`): rooms (create, join, leave), input devices, mute,
//! push-to-talk's state, deafen, publishing a microphone / tone / camera / screen / test pattern,
//! the tracks being published, participants with speaking indicators, and per-track statistics.
//!
//! Add [`StreamsPanelPlugin`] after `StreamsPlugin` (and `EguiPlugin`, which it adds if missing).
//! Drawing is a pure function of a [`PanelView`] snapshot ([`draw_panel`]); what the user clicks
//! comes back as [`PanelAction`]s, which [`StreamsPanelPlugin`] turns into the plugin's requests.
use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};
use streams_client::audio::device::input_devices;
use streams_proto::wire::{EventScope, TrackKind};
use streams_proto::{RoomId, UserId};

use crate::commands::StreamsCommands;
use crate::media_link::RoomMediaLink;
use crate::media_requests::{
    AudioInput, Deafen, JoinMedia, LeaveMedia, MuteMicrophone, PublishAudio, PublishVideo,
    Unpublish, VideoInput,
};
use crate::rooms::{Joined, Participant, ParticipantOf, Recording, StreamRoom};
use crate::session::{Connected, Connecting, Disconnected, StreamsSession};
use crate::tracks::{
    AudioTrackStats, LocalTrack, LocalTrackOf, LocalTrackStats, RemoteTrack, Speaking, TrackOf,
    VideoTrackStats,
};
use streams_client::{NewRoom, Operation};

/// Adds the streams panel (a window in the primary egui context).
pub struct StreamsPanelPlugin;

impl Plugin for StreamsPanelPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<EguiPlugin>() {
            app.add_plugins(EguiPlugin::default());
        }
        app.init_resource::<PanelState>()
            .add_systems(EguiPrimaryContextPass, panel);
    }
}

/// What the user has typed or chosen in the panel (kept across frames).
#[derive(Resource, Debug, Clone, Default)]
pub struct PanelState {
    /// The name for a new room.
    pub new_room: String,
    /// The chosen microphone (`None`: the default device).
    pub microphone: Option<String>,
    /// Microphones found when the panel opened (refreshed with its button).
    pub microphones: Option<Vec<String>>,
    /// Mute state per room entity.
    pub muted: Vec<Entity>,
    /// Deafened.
    pub deafened: bool,
}

/// A snapshot of what the panel shows.
#[derive(Debug, Clone, Default)]
pub struct PanelView {
    /// The connection, in words.
    pub connection: String,
    /// Every known room.
    pub rooms: Vec<RoomView>,
}

/// One room in the panel.
#[derive(Debug, Clone)]
pub struct RoomView {
    /// Its entity.
    pub entity: Entity,
    /// Its id.
    pub id: RoomId,
    /// Its name (if readable).
    pub name: Option<String>,
    /// Members.
    pub members: usize,
    /// Joined (presence).
    pub joined: bool,
    /// Its media is joined.
    pub media: bool,
    /// It is being recorded.
    pub recording: bool,
    /// Who is present, whether they speak, and their tracks' statistics.
    pub participants: Vec<ParticipantView>,
    /// What this client publishes here.
    pub local_tracks: Vec<LocalTrackView>,
}

/// One participant in the panel.
#[derive(Debug, Clone)]
pub struct ParticipantView {
    /// Who.
    pub user_id: UserId,
    /// This client's user.
    pub is_local: bool,
    /// Speaking now.
    pub speaking: bool,
    /// Their tracks, one line each.
    pub tracks: Vec<String>,
}

/// One published track in the panel.
#[derive(Debug, Clone)]
pub struct LocalTrackView {
    /// Its entity (to unpublish).
    pub entity: Entity,
    /// One line: kind, source, figures.
    pub line: String,
}

/// What the user asked for in the panel.
#[derive(Debug, Clone, PartialEq)]
pub enum PanelAction {
    /// Create a room with this name.
    CreateRoom(String),
    /// Join a room and its media.
    Join(Entity, RoomId),
    /// Leave a room and its media.
    Leave(Entity, RoomId),
    /// Publish audio.
    PublishAudio(Entity, AudioInput),
    /// Publish video.
    PublishVideo(Entity, VideoInput),
    /// Stop a local track.
    Unpublish(Entity),
    /// Mute or unmute the microphone in a room.
    Mute(Entity, bool),
    /// Deafen or not.
    Deafen(bool),
    /// List the microphones again.
    RefreshDevices,
}

fn short(user: &UserId) -> &str {
    &user.as_str()[..8.min(user.as_str().len())]
}

/// Draws the panel for `view`; returns what was clicked.
pub fn draw_panel(
    ctx: &egui::Context,
    view: &PanelView,
    state: &mut PanelState,
) -> Vec<PanelAction> {
    let mut actions = Vec::new();
    egui::Window::new("Streams")
        .default_width(340.0)
        .show(ctx, |ui| {
            ui.label(&view.connection);
            ui.horizontal(|ui| {
                ui.text_edit_singleline(&mut state.new_room);
                if ui.button("Create room").clicked() && !state.new_room.trim().is_empty() {
                    actions.push(PanelAction::CreateRoom(state.new_room.trim().to_string()));
                    state.new_room.clear();
                }
            });
            ui.horizontal(|ui| {
                let mut deafened = state.deafened;
                if ui.checkbox(&mut deafened, "Deafen").changed() {
                    state.deafened = deafened;
                    actions.push(PanelAction::Deafen(deafened));
                }
                let microphones = state.microphones.clone().unwrap_or_default();
                let chosen = state
                    .microphone
                    .clone()
                    .unwrap_or_else(|| "default microphone".into());
                egui::ComboBox::from_id_salt("microphone")
                    .selected_text(chosen)
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut state.microphone, None, "default microphone");
                        for name in microphones {
                            ui.selectable_value(&mut state.microphone, Some(name.clone()), name);
                        }
                    });
                if ui.small_button("⟳").clicked() {
                    actions.push(PanelAction::RefreshDevices);
                }
            });
            ui.separator();
            for room in &view.rooms {
                draw_room(ui, room, state, &mut actions);
            }
            if view.rooms.is_empty() {
                ui.label("No rooms yet.");
            }
        });
    actions
}

fn draw_room(
    ui: &mut egui::Ui,
    room: &RoomView,
    state: &mut PanelState,
    actions: &mut Vec<PanelAction>,
) {
    let title = format!(
        "{} ({} members){}",
        room.name.as_deref().unwrap_or("unreadable room"),
        room.members,
        if room.recording { " ● recording" } else { "" }
    );
    egui::CollapsingHeader::new(title)
        .id_salt(room.id.as_str())
        .default_open(true)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                if room.joined {
                    if ui.button("Leave").clicked() {
                        actions.push(PanelAction::Leave(room.entity, room.id.clone()));
                    }
                } else if ui.button("Join").clicked() {
                    actions.push(PanelAction::Join(room.entity, room.id.clone()));
                }
                if room.media {
                    let mut muted = state.muted.contains(&room.entity);
                    if ui.checkbox(&mut muted, "Mute").changed() {
                        state.muted.retain(|e| *e != room.entity);
                        if muted {
                            state.muted.push(room.entity);
                        }
                        actions.push(PanelAction::Mute(room.entity, muted));
                    }
                }
            });
            if room.media {
                ui.horizontal_wrapped(|ui| {
                    ui.label("Publish:");
                    if ui.button("Microphone").clicked() {
                        let input = AudioInput::Microphone(state.microphone.clone());
                        actions.push(PanelAction::PublishAudio(room.entity, input));
                    }
                    if ui.button("Tone").clicked() {
                        actions.push(PanelAction::PublishAudio(
                            room.entity,
                            AudioInput::Tone(440.0),
                        ));
                    }
                    if ui.button("Camera").clicked() {
                        let input = VideoInput::Camera { index: 0, fps: 15 };
                        actions.push(PanelAction::PublishVideo(room.entity, input));
                    }
                    if ui.button("Screen").clicked() {
                        let input = VideoInput::Screen { fps: 10 };
                        actions.push(PanelAction::PublishVideo(room.entity, input));
                    }
                    if ui.button("Test pattern").clicked() {
                        let input = VideoInput::Pattern {
                            width: 640,
                            height: 360,
                            fps: 15,
                        };
                        actions.push(PanelAction::PublishVideo(room.entity, input));
                    }
                });
                for track in &room.local_tracks {
                    ui.horizontal(|ui| {
                        ui.label(&track.line);
                        if ui.small_button("Stop").clicked() {
                            actions.push(PanelAction::Unpublish(track.entity));
                        }
                    });
                }
            }
            for participant in &room.participants {
                let dot = if participant.speaking { "🔊" } else { "·" };
                let you = if participant.is_local { " (you)" } else { "" };
                ui.label(format!("{dot} {}…{you}", short(&participant.user_id)));
                for line in &participant.tracks {
                    ui.label(format!("    {line}"));
                }
            }
        });
}

/// Builds the view, draws it, and carries out what was clicked.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn panel(
    mut contexts: EguiContexts,
    mut state: ResMut<PanelState>,
    mut commands: Commands,
    mut streams: ResMut<StreamsCommands>,
    session: Query<(
        &StreamsSession,
        Has<Connected>,
        Option<&Connecting>,
        Option<&Disconnected>,
    )>,
    rooms: Query<(
        Entity,
        &StreamRoom,
        Has<Joined>,
        Has<RoomMediaLink>,
        Has<Recording>,
    )>,
    participants: Query<(Entity, &Participant, &ParticipantOf, Has<Speaking>)>,
    remote: Query<(
        &RemoteTrack,
        &TrackOf,
        Option<&AudioTrackStats>,
        Option<&VideoTrackStats>,
    )>,
    local: Query<(Entity, &LocalTrack, &LocalTrackOf, Option<&LocalTrackStats>)>,
) {
    if state.microphones.is_none() {
        state.microphones = Some(input_devices().into_iter().map(|d| d.name).collect());
    }
    let connection = match session.iter().next() {
        Some((s, true, _, _)) => format!("Connected to {}", s.bridge_url),
        Some((s, _, Some(c), _)) => {
            format!("Connecting to {} (attempt {})", s.bridge_url, c.attempt)
        }
        Some((_, _, _, Some(d))) => format!("Disconnected: {}", d.reason),
        _ => "No session".into(),
    };
    let view = PanelView {
        connection,
        rooms: rooms
            .iter()
            .map(|(entity, room, joined, media, recording)| RoomView {
                entity,
                id: room.id.clone(),
                name: room.name.clone(),
                members: room.users.len(),
                joined,
                media,
                recording,
                participants: participants
                    .iter()
                    .filter(|(_, _, of, _)| of.0 == entity)
                    .map(|(_, p, _, speaking)| ParticipantView {
                        user_id: p.user_id.clone(),
                        is_local: p.is_local,
                        speaking,
                        tracks: remote
                            .iter()
                            .filter(|(t, of, _, _)| of.0 == entity && t.user_id == p.user_id)
                            .map(|(t, _, audio, video)| remote_line(t, audio, video))
                            .collect(),
                    })
                    .collect(),
                local_tracks: local
                    .iter()
                    .filter(|(_, _, of, _)| of.0 == entity)
                    .map(|(e, t, _, stats)| LocalTrackView {
                        entity: e,
                        line: local_line(t, stats),
                    })
                    .collect(),
            })
            .collect(),
    };
    let Ok(ctx) = contexts.ctx_mut() else { return };
    for action in draw_panel(ctx, &view, &mut state) {
        apply(action, &mut commands, &mut streams, &mut state);
    }
}

fn remote_line(
    track: &RemoteTrack,
    audio: Option<&AudioTrackStats>,
    video: Option<&VideoTrackStats>,
) -> String {
    match (track.kind, audio, video) {
        (TrackKind::Audio, Some(a), _) => format!(
            "audio: {:.0} kbit/s, jitter {:.1} ms, {} lost, {} concealed",
            a.0.bitrate_kbps, a.0.jitter_ms, a.0.lost, a.0.concealed
        ),
        (kind, _, Some(v)) => format!(
            "{kind:?}: {}×{} {:.0} fps, {} freezes, decode {:.1} ms",
            v.0.width, v.0.height, v.0.fps, v.0.freezes, v.0.decode_ms_p50
        ),
        (kind, _, _) => format!("{kind:?}"),
    }
}

fn local_line(track: &LocalTrack, stats: Option<&LocalTrackStats>) -> String {
    let state = if track.published {
        "sending"
    } else {
        "starting"
    };
    let figures = match stats.and_then(|s| s.video.as_ref()) {
        Some(v) => format!(
            ", {}×{} {:.0} kbit/s",
            v.width,
            v.height,
            f64::from(v.sent_bitrate) / 1000.0
        ),
        None => stats
            .map(|s| format!(", {} frames", s.frames))
            .unwrap_or_default(),
    };
    format!("{:?} {state}: {}{figures}", track.kind, track.description)
}

/// Carries out one panel action through the plugin's requests.
pub(crate) fn apply(
    action: PanelAction,
    commands: &mut Commands,
    streams: &mut StreamsCommands,
    state: &mut PanelState,
) {
    match action {
        PanelAction::CreateRoom(name) => {
            streams.send(Operation::CreateRoom(NewRoom {
                name,
                ..Default::default()
            }));
        }
        PanelAction::Join(entity, id) => {
            streams.send(Operation::Subscribe(EventScope::Room(id.clone())));
            streams.send(Operation::JoinRoom(id));
            commands.trigger(JoinMedia { entity });
        }
        PanelAction::Leave(entity, id) => {
            commands.trigger(LeaveMedia { entity });
            streams.send(Operation::LeaveRoom(id));
        }
        PanelAction::PublishAudio(entity, input) => {
            commands.trigger(PublishAudio { entity, input });
        }
        PanelAction::PublishVideo(entity, input) => {
            commands.trigger(PublishVideo {
                entity,
                input,
                preview: true,
            });
        }
        PanelAction::Unpublish(entity) => commands.trigger(Unpublish { entity }),
        PanelAction::Mute(entity, muted) => commands.trigger(MuteMicrophone { entity, muted }),
        PanelAction::Deafen(deafened) => commands.trigger(Deafen(deafened)),
        PanelAction::RefreshDevices => state.microphones = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ctx: &egui::Context, view: &PanelView) -> String {
        let mut state = PanelState {
            microphones: Some(vec!["Test mic".into()]),
            ..Default::default()
        };
        let mut all = String::new();
        // egui lays a new window out over a couple of passes.
        for _ in 0..3 {
            let mut output = ctx.run_ui(egui::RawInput::default(), |ui| {
                draw_panel(ui.ctx(), view, &mut state);
            });
            // No renderer here to take the font atlas.
            output.textures_delta.clear();
            all.clear();
            for shape in output.shapes {
                if let egui::epaint::Shape::Text(text) = shape.shape {
                    all.push_str(text.galley.text());
                    all.push('\n');
                }
            }
        }
        all
    }

    #[test]
    fn the_panel_shows_rooms_participants_speaking_and_stats() {
        let alice = streams_proto::Identity::generate().user_id().clone();
        let bob = streams_proto::Identity::generate().user_id().clone();
        let view = PanelView {
            connection: "Connected to ws://127.0.0.1:1".into(),
            rooms: vec![RoomView {
                entity: Entity::PLACEHOLDER,
                id: RoomId::random(),
                name: Some("Standup".into()),
                members: 2,
                joined: true,
                media: true,
                recording: true,
                participants: vec![
                    ParticipantView {
                        user_id: alice.clone(),
                        is_local: true,
                        speaking: false,
                        tracks: vec![],
                    },
                    ParticipantView {
                        user_id: bob.clone(),
                        is_local: false,
                        speaking: true,
                        tracks: vec!["Video: 640×360 15 fps, 0 freezes, decode 1.0 ms".into()],
                    },
                ],
                local_tracks: vec![LocalTrackView {
                    entity: Entity::PLACEHOLDER,
                    line: "Audio sending: Tone(440.0), 50 frames".into(),
                }],
            }],
        };
        let shown = texts(&egui::Context::default(), &view);
        for expected in [
            "Connected to ws://127.0.0.1:1",
            "Standup (2 members) ● recording",
            "Leave",
            "Mute",
            "Screen",
            "Audio sending: Tone(440.0), 50 frames",
            "640×360 15 fps",
        ] {
            assert!(shown.contains(expected), "{expected:?} not in {shown}");
        }
        assert!(shown.contains(&format!("🔊 {}…", short(&bob))), "{shown}");
        assert!(
            shown.contains(&format!("· {}… (you)", short(&alice))),
            "{shown}"
        );
        assert!(!shown.contains("Join"), "{shown}");
    }
}
