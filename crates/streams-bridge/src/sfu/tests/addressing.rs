//! The core behind a 1:1 NAT: its sessions announce the public address, datagrams arrive at the
//! private one it is bound to, and media flows.
use std::time::Duration;

use str0m::media::MediaKind;

use super::{SFU, World};

#[test]
fn behind_a_one_to_one_nat_sessions_announce_the_public_address_and_media_flows() {
    let public = "203.0.113.7".parse().unwrap();
    let mut world = World::announcing(&[public]);
    let alice = world.join(&[MediaKind::Audio], &[], &[]);
    let voice = world.track(alice, 0);
    let bob = world.join(&[], &[MediaKind::Audio], &[voice]);
    let candidates: Vec<&str> = world.members[bob]
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    assert!(candidates[0].contains("203.0.113.7 7000"), "{candidates:?}");
    assert!(!world.members[bob].answer.contains(&SFU.ip().to_string()));
    world.connect();
    world.talk(alice, Duration::from_secs(1));
    let heard = world.members[bob].received.len();
    assert!(heard >= 45, "Bob received {heard} frames through the NAT");
}
