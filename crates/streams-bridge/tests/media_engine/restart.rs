//! The bridge restarts under a call: it is stopped while a member publishes a tone to another, and
//! started again 3 s later on the same ports and store. Neither member does anything: their clients
//! reconnect, find the bridge no longer knows their media sessions, and rejoin (new sessions, the
//! tone published again); the listener hears it again within 2 s of the bridge being back.
use std::path::Path;
use std::time::{Duration, Instant};

use streams_bridge::{Bridge, BridgeConfig, BridgeHandle, SqliteStore, Store};
use streams_client::media::driver::RoomMedia;
use streams_client::media::events::{MediaEvent, RejoinReason};
use streams_proto::{ContextId, Identity};

use super::common::*;

/// A bridge on `config`'s ports and store.
fn start(config: &BridgeConfig) -> BridgeHandle {
    Bridge::spawn(config.clone()).unwrap()
}

fn registered(db: &Path, users: &[&Identity]) {
    let mut store = SqliteStore::open(db).unwrap();
    for user in users {
        store
            .add_user(user.user_id(), &ContextId::default(), 0)
            .unwrap();
    }
}

#[test]
fn after_a_bridge_restart_both_members_rejoin_and_the_tone_is_heard_again_within_2_s() {
    let _serial = super::one_at_a_time();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bridge.db");
    registered(&db, &[&alice, &bob]);
    let mut config = BridgeConfig {
        db,
        open: false,
        ..BridgeConfig::ephemeral()
    };
    let bridge = start(&config);
    // The restarted bridge listens where this one does.
    config.listen = bridge.addr();
    config.media_listen = bridge.media_addr();
    let url = bridge.url();
    let (a, b) = (connect(&url, &alice), connect(&url, &bob));
    let room = create_room(&a, "restart", &[bob.user_id()]);

    let super::TonePair {
        listener: bobs,
        publisher: alices,
        mut mixer,
    } = super::tone_pair(&url, (&b, &bob), (&a, &alice), &room.id);
    let mut voiced = Vec::new();
    super::play_voiced(&mut mixer, &mut voiced, Duration::from_secs(30), |v| {
        v.len() >= 100
    });
    assert!(voiced.len() >= 100, "Bob hears Alice before the restart");

    drop(bridge);
    let stopped = Instant::now();
    // The listener's output keeps being pulled while the bridge is down.
    super::play_voiced(&mut mixer, &mut voiced, Duration::from_secs(3), |_| false);
    let bridge = start(&config);
    let back = Instant::now();
    super::play_voiced(&mut mixer, &mut voiced, Duration::from_secs(20), |v| {
        v.iter().filter(|at| **at > back).count() >= 50
    });
    let again = voiced
        .iter()
        .find(|at| **at > back)
        .map(|at| at.duration_since(back))
        .expect("Bob hears Alice again after the restart");
    let silent_before_back = voiced
        .iter()
        .filter(|at| **at > stopped + Duration::from_millis(500) && **at < back)
        .count();
    assert_eq!(
        silent_before_back, 0,
        "nothing plays while the bridge is down"
    );
    let rejoined = |media: &RoomMedia| {
        media.events().try_iter().find_map(|e| match e {
            MediaEvent::Rejoined { reason, after } => Some((reason, after)),
            _ => None,
        })
    };
    let (alice_reason, alice_after) = rejoined(&alices).expect("Alice's engine rejoined");
    let (bob_reason, _) = rejoined(&bobs).expect("Bob's engine rejoined");
    assert_eq!(alice_reason, RejoinReason::BridgeLostSession);
    assert_eq!(bob_reason, RejoinReason::BridgeLostSession);
    assert!(bridge.media_session_count() == 2);
    println!(
        "bridge down 3 s: Bob hears Alice again {:.2} s after it is back (Alice's engine rejoined \
         {:.2} s after it noticed)",
        again.as_secs_f64(),
        alice_after.as_secs_f64()
    );
    assert!(again <= Duration::from_secs(2), "{again:?}");
    let heard_after = voiced.iter().filter(|at| **at > back).count();
    assert!(
        heard_after >= 50,
        "the tone keeps playing after the rejoin: {heard_after} periods"
    );
}
