//! Deterministic tests of the core: two cores and a forwarding SFU of str0m peers on simulated time
//! ([`sim::World`]). Signaling replies are held back or refused while media flows; keys rotate
//! while a member talks; a member whose session the bridge forgot rejoins; a member whose address
//! changes moves its media in the same session; a cut path is reported within a second and comes
//! back in the same session.
mod sim;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streams_proto::wire::{ErrorCode, WireError};
use streams_proto::{MediaId, TrackId};

use crate::audio::analysis::tone_energy_share;
use crate::error::ClientError;
use crate::media::events::{MediaCommand, MediaEvent, RejoinReason, StopReason};
use sim::{NegotiationPolicy, World};

const ALICE: usize = 0;
const BOB: usize = 1;

/// Alice publishes a 440 Hz tone and Bob hears it (decoded frames are flowing).
fn alice_talking_to_bob() -> World {
    let mut world = World::new();
    world.publish_tone(ALICE, 440.0);
    let heard = world.run_until(Duration::from_secs(10), |w| {
        w.voice_stats(BOB).iter().any(|(_, s)| s.frames >= 25)
    });
    assert!(
        heard,
        "Bob never heard Alice: {:?}",
        world.members[BOB].events
    );
    world
}

/// Frames of Bob's remote voice `track` decoded so far.
fn decoded(world: &mut World, track: TrackId) -> u64 {
    world
        .voice_stats(BOB)
        .into_iter()
        .find(|(id, _)| *id == track)
        .map_or(0, |(_, s)| s.frames)
}

/// The track Bob receives from Alice, and the mid it leaves Alice on.
fn alices_track(world: &mut World) -> (TrackId, MediaId) {
    let track = world.voice_stats(BOB)[0].0;
    (track, track.mid)
}

/// The longest gap between Alice's frames on `mid` reaching the SFU within `[from, to]`.
fn longest_gap(world: &World, mid: MediaId, from: Instant, to: Instant) -> Duration {
    let times = &world.arrivals_at_sfu[&(ALICE, mid)];
    let window: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|t| *t + Duration::from_millis(25) >= from && *t <= to)
        .collect();
    assert!(window.len() >= 2, "no frames in the window");
    window
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[test]
fn a_held_renegotiation_stalls_neither_sending_nor_receiving() {
    let mut world = alice_talking_to_bob();
    let (track, mid) = alices_track(&mut world);
    // Both renegotiate at once (Alice adds a track, Bob publishes one); both replies are held.
    let hold = Duration::from_millis(500);
    world.members[ALICE].negotiation = NegotiationPolicy::Hold(hold);
    world.members[BOB].negotiation = NegotiationPolicy::Hold(hold);
    let start = world.now;
    let decoded_before = decoded(&mut world, track);
    world.publish_tone(ALICE, 660.0);
    world.publish_tone(BOB, 880.0);
    // Until just before the replies are let through.
    world.run_for(hold - Duration::from_millis(5));
    let held_until = world.now;
    // The offers were out the whole time: nothing new is published yet.
    let alice_published = |w: &World| {
        w.saw(ALICE, |e| {
            matches!(e, MediaEvent::LocalTrackPublished { index: 1, .. })
        })
    };
    let bob_published = |w: &World| {
        w.saw(BOB, |e| {
            matches!(e, MediaEvent::LocalTrackPublished { index: 0, .. })
        })
    };
    assert!(!alice_published(&world) && !bob_published(&world));
    let gap = longest_gap(&world, mid, start, held_until);
    assert!(
        gap <= Duration::from_millis(25),
        "Alice's frames stalled {gap:?}"
    );
    let during = decoded(&mut world, track) - decoded_before;
    assert!(
        during >= 23,
        "Bob decoded {during} of Alice's 24 frames while his offer was out"
    );
    // Released, both offers complete: each hears the other's new track.
    let both = world.run_until(Duration::from_secs(5), |w| {
        w.voice_stats(BOB).len() == 2 && w.voice_stats(ALICE).len() == 1
    });
    assert!(both, "the held offers never completed");
    assert!(alice_published(&world) && bob_published(&world));
    let stats = world.voice_stats(BOB);
    let (_, first) = stats.iter().find(|(id, _)| *id == track).unwrap();
    assert_eq!((first.lost, first.late, first.decrypt_failures), (0, 0, 0));
}

#[test]
fn a_failed_renegotiation_leaves_established_media_running() {
    let refusal = ClientError::Bridge(WireError::new(ErrorCode::Forbidden, "revoked"));
    for error in [ClientError::Timeout, refusal] {
        let mut world = alice_talking_to_bob();
        let (track, mid) = alices_track(&mut world);
        world.members[BOB].negotiation = NegotiationPolicy::FailOnce(error.clone());
        let start = world.now;
        let before = decoded(&mut world, track);
        world.publish_tone(BOB, 880.0);
        world.run_for(Duration::from_secs(1));
        assert!(
            world.saw(BOB, |e| matches!(e, MediaEvent::NegotiationFailed(_))),
            "{error}: the failure was not reported"
        );
        assert!(
            !world.members[BOB].core.is_stopped(),
            "{error}: Bob's media stopped"
        );
        let during = decoded(&mut world, track) - before;
        assert!(during >= 48, "{error}: Bob decoded {during} of 50 frames");
        let gap = longest_gap(&world, mid, start, world.now);
        assert!(
            gap <= Duration::from_millis(25),
            "{error}: Alice stalled {gap:?}"
        );
        // The offer is tried again and Alice hears Bob.
        let heard = world.run_until(Duration::from_secs(5), |w| {
            w.voice_stats(ALICE).iter().any(|(_, s)| s.frames >= 10)
        });
        assert!(heard, "{error}: Bob's track was never negotiated");
    }
}

#[test]
fn a_new_epoch_switches_senders_at_once_and_receivers_lose_no_frame() {
    let mut world = alice_talking_to_bob();
    let (track, _) = alices_track(&mut world);
    world.run_for(Duration::from_millis(500));
    // Alice switches first; Bob learns the new key 60 ms later (the event reached him later).
    world.rotate_keys(ALICE, Duration::from_millis(60));
    world.run_for(Duration::from_secs(2));
    let now = world.now;
    world.members[ALICE]
        .core
        .handle_command(now, MediaCommand::Stop);
    world.run_for(Duration::from_millis(300));
    let (sent, epochs) = world.members[ALICE]
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            MediaEvent::LocalStats { frames, epochs, .. } => Some((*frames, epochs.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(epochs, vec![0, 1], "Alice switched keys at once");
    // Her session closed, Bob's core dropped her track and reported its final figures.
    let bob = world.members[BOB]
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            MediaEvent::Stats(stats) => stats.iter().find(|(id, _)| *id == track).cloned(),
            _ => None,
        })
        .map(|(_, stats)| stats)
        .expect("Bob's statistics of Alice's voice");
    assert!(world.saw(BOB, |e| matches!(
        e,
        MediaEvent::RemoteTrackRemoved { track_id } if *track_id == track
    )));
    assert_eq!(
        (bob.lost, bob.late, bob.decrypt_failures),
        (0, 0, 0),
        "{bob:?}"
    );
    // Every frame Alice sent was decoded, but the few still in Bob's buffer when she stopped.
    assert!(
        bob.frames + 5 >= sent,
        "sent {sent}, decoded {}",
        bob.frames
    );
    let heard = &world.members[BOB].heard[&track];
    let tail = &heard[heard.len().saturating_sub(48_000)..];
    assert!(tone_energy_share(tail, 48_000, 440.0) > 0.5);
}

/// A listing answered before Alice published arrives after her stream's event (replies and events
/// reach the core by different channels): Bob still receives her and keeps receiving her.
#[test]
fn a_stale_listing_neither_forgets_nor_ends_a_stream_announced_after_it() {
    let mut world = World::new();
    world.members[BOB].listing_delay = Duration::from_millis(500);
    world.publish_tone(ALICE, 440.0);
    let heard = world.run_until(Duration::from_secs(10), |w| {
        w.voice_stats(BOB).iter().any(|(_, s)| s.frames >= 100)
    });
    assert!(
        heard,
        "Bob never heard Alice: {:?}",
        world.members[BOB].events
    );
    assert!(
        !world.saw(BOB, |e| matches!(e, MediaEvent::RemoteTrackRemoved { .. })),
        "a stale listing ended Alice's track: {:?}",
        world.members[BOB].events
    );
}

#[test]
fn a_member_whose_session_the_bridge_forgot_rejoins_and_is_heard_again() {
    let mut world = alice_talking_to_bob();
    let (old, _) = alices_track(&mut world);
    world.forget_session(ALICE);
    let heard_again = world.run_until(Duration::from_secs(10), |w| {
        w.voice_stats(BOB)
            .iter()
            .any(|(track, s)| *track != old && s.frames >= 25)
    });
    assert!(heard_again, "{:?}", world.members[ALICE].events);
    assert!(world.saw(ALICE, |e| matches!(
        e,
        MediaEvent::Reconnecting {
            reason: RejoinReason::BridgeLostSession
        }
    )));
    assert!(world.saw(ALICE, |e| matches!(e, MediaEvent::Rejoined { .. })));
    // Her track kept its index and was published again.
    let published = world.members[ALICE]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, MediaEvent::LocalTrackPublished { index: 0, .. }))
        .count();
    assert!(published >= 2, "{published}");
    assert!(world.saw(BOB, |e| matches!(
        e,
        MediaEvent::RemoteTrackRemoved { track_id } if *track_id == old
    )));
}

#[test]
fn a_room_deleted_while_signaling_was_down_stops_the_core() {
    let mut world = alice_talking_to_bob();
    // The deletion's event went to a connection kept for a resume, and was dropped.
    world.room_gone = true;
    world.resync(ALICE, true);
    let stopped = world.run_until(Duration::from_secs(5), |w| {
        w.saw(ALICE, |e| {
            matches!(
                e,
                MediaEvent::Stopped {
                    reason: StopReason::NotInRoom
                }
            )
        })
    });
    assert!(stopped, "{:?}", world.members[ALICE].events);
}

/// Bob's address changes while he listens: his engine moves the media (new candidates, ranked
/// above the old) and the bridge, ICE lite, switches to the new pair at once, in the same session:
/// the same track goes on, nothing is renegotiated, nothing is rejoined.
#[test]
fn a_member_whose_address_changes_is_heard_again_at_once_in_the_same_session() {
    let mut world = alice_talking_to_bob();
    let (track, _) = alices_track(&mut world);
    let stats = |world: &mut World| {
        let (_, s) = world
            .voice_stats(BOB)
            .into_iter()
            .find(|(t, _)| *t == track)
            .unwrap();
        (s.frames, s.concealed)
    };
    let (frames_before, concealed_before) = stats(&mut world);
    let to = SocketAddr::from(([10, 1, 0, 77], 4242));
    world.move_member(BOB, to);
    world.run_for(Duration::from_secs(2));
    let (frames, concealed) = stats(&mut world);
    let gap = Duration::from_millis(20 * (concealed - concealed_before));
    assert!(
        gap <= Duration::from_millis(100),
        "{gap:?} concealed after the move: {:?}",
        world.members[BOB].events
    );
    assert!(frames >= frames_before + 85, "{frames_before} → {frames}");
    assert!(
        world.lost_to_old_addresses > 0,
        "the SFU sent to the old address for a while"
    );
    assert!(world.saw(
        BOB,
        |e| matches!(e, MediaEvent::PathChanged { to: t, .. } if *t == to)
    ));
    assert!(!world.saw(BOB, |e| matches!(e, MediaEvent::Reconnecting { .. })));
    assert_eq!(
        world.voice_stats(BOB).len(),
        1,
        "the same track, not a second one"
    );
}

/// Bob's path is cut for 3 s, both ways: his engine reports it within about a second (its checks
/// go every 400 ms and stop being answered), keeps the session, and reports it back when the path
/// returns; Alice's voice plays on without a rejoin.
#[test]
fn a_path_cut_for_3_s_is_reported_within_a_second_and_comes_back_in_the_same_session() {
    let mut world = alice_talking_to_bob();
    let (track, _) = alices_track(&mut world);
    let cut_at = world.now;
    let cut = Duration::from_secs(3);
    world.cut_path(BOB, cut);
    world.run_for(Duration::from_secs(5));
    let when = |world: &World, matches: fn(&MediaEvent) -> bool| {
        world.members[BOB]
            .events
            .iter()
            .find(|(at, e)| *at >= cut_at && matches(e))
            .map(|(at, e)| (*at - cut_at, e.clone()))
    };
    let (lost, _) = when(&world, |e| matches!(e, MediaEvent::PathLost)).expect("PathLost");
    assert!(
        lost >= Duration::from_millis(900) && lost <= Duration::from_millis(1500),
        "reported {lost:?} after the cut"
    );
    let (back, event) =
        when(&world, |e| matches!(e, MediaEvent::PathBack { .. })).expect("PathBack");
    assert!(
        back >= cut && back <= cut + Duration::from_millis(500),
        "back {back:?} after the cut: {event:?}"
    );
    assert!(!world.saw(BOB, |e| matches!(e, MediaEvent::Reconnecting { .. })));
    assert_eq!(
        world.rebound, 0,
        "the same socket: nothing but the path changed"
    );
    let before = decoded(&mut world, track);
    world.run_for(Duration::from_secs(1));
    assert!(
        decoded(&mut world, track) >= before + 40,
        "Alice is heard again"
    );
}

/// Bob's NAT gives him a new mapping mid-call (a home router's rebinding, a phone's carrier NAT):
/// his checks and media reach the bridge from a new public address, and what the bridge sends to
/// the old one is lost, while his checks are answered at the new one. After a second without
/// media his engine moves to a fresh socket (new candidates, ranked above the old): the bridge
/// follows, and Alice is heard again in the same session, within a second and a half.
#[test]
fn a_member_whose_nat_mapping_changes_is_heard_again_within_a_second_and_a_half() {
    let mut world = alice_talking_to_bob();
    let (track, _) = alices_track(&mut world);
    let rebound_at = world.now;
    world.rebind_nat(BOB, SocketAddr::from(([198, 51, 100, 9], 40_001)));
    world.run_for(Duration::from_millis(1500));
    let before = decoded(&mut world, track);
    world.run_for(Duration::from_secs(1));
    assert!(
        decoded(&mut world, track) >= before + 40,
        "Alice is heard again within 1.5 s: {:?}",
        world.members[BOB]
            .events
            .iter()
            .filter(|(at, _)| *at >= rebound_at)
            .collect::<Vec<_>>()
    );
    assert_eq!(world.rebound, 1, "one fresh socket");
    assert!(world.saw(BOB, |e| matches!(e, MediaEvent::PathChanged { .. })));
    assert!(!world.saw(BOB, |e| matches!(e, MediaEvent::Reconnecting { .. })));
    assert_eq!(world.voice_stats(BOB).len(), 1, "the same track");
}
