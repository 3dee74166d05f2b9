//! The control plane end to end: a real bridge on loopback, several real clients.
mod common;
#[path = "control_plane/tls.rs"]
mod tls;

use std::time::Duration;

use common::*;
use streams_client::{ClientEvent, ConnectionState, RoomEvent, RoomUpdate};
use streams_proto::policy::{Access, Policy};
use streams_proto::wire::{ErrorCode, EventScope, Paging, SortOrder};
use streams_proto::{ContextId, Identity};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn members_read_private_meta_and_outsiders_see_nothing() {
    let (alice, bob, eve) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let bridge = bridge_with_users(&[&alice, &bob, &eve]);
    let url = bridge.handle.url();
    let (a, b, e) = (
        connect(&url, &alice),
        connect(&url, &bob),
        connect(&url, &eve),
    );
    let room = create_room(&a, "Strategy", &[bob.user_id()]);
    assert_eq!(room.version, 1);
    assert_eq!(room.key_epoch, 0);

    let seen_by_bob = b.get_room(&room.id).unwrap();
    assert_eq!(seen_by_bob.name(), Some("Strategy"));
    assert_eq!(
        seen_by_bob.private_meta(),
        Some(&b"private plan of Strategy"[..])
    );
    assert_eq!(seen_by_bob.public_meta, b"public info");

    // The outsider gets the same answer as for a room that does not exist, and an empty listing.
    let missing = e.get_room(&room.id).unwrap_err();
    let nonexistent = e.get_room(&streams_proto::RoomId::random()).unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    assert_eq!(missing, nonexistent);
    let page = e.list_rooms(None, Paging::default()).unwrap();
    assert_eq!(page.total, 0);
    assert!(page.rooms.is_empty());
    assert_eq!(b.list_rooms(None, Paging::default()).unwrap().total, 1);

    // The bridge's database never holds the private plaintext.
    assert!(!dir_contains(
        bridge.dir.path(),
        b"private plan of Strategy"
    ));
    assert!(!dir_contains(bridge.dir.path(), b"Strategy"));
}

#[test]
fn crud_paging_and_delete_permissions() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bridge = bridge_with_users(&[&alice, &bob]);
    let url = bridge.handle.url();
    let (a, b) = (connect(&url, &alice), connect(&url, &bob));
    let ids: Vec<_> = (0..5)
        .map(|i| create_room(&a, &format!("room {i}"), &[bob.user_id()]).id)
        .collect();

    let page = b
        .list_rooms(
            None,
            Paging {
                skip: 1,
                limit: 2,
                order: SortOrder::Asc,
            },
        )
        .unwrap();
    assert_eq!(page.total, 5);
    let names: Vec<_> = page.rooms.iter().map(|r| r.name().unwrap()).collect();
    assert_eq!(names, ["room 1", "room 2"]);
    let newest = b
        .list_rooms(
            None,
            Paging {
                skip: 0,
                limit: 1,
                order: SortOrder::Desc,
            },
        )
        .unwrap();
    assert_eq!(newest.rooms[0].id, ids[4]);
    let bad = b
        .list_rooms(
            None,
            Paging {
                skip: 0,
                limit: 0,
                order: SortOrder::Asc,
            },
        )
        .unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::Invalid));

    let mut update = RoomUpdate::new(ids[0].clone());
    update.name = Some("renamed".into());
    update.public_meta = Some(b"new public".to_vec());
    let updated = a.update_room(update).unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.key_epoch, 0, "a meta change keeps the epoch");
    let fetched = b.get_room(&ids[0]).unwrap();
    assert_eq!(fetched.name(), Some("renamed"));
    assert_eq!(fetched.public_meta, b"new public");
    assert_eq!(fetched.private_meta(), Some(&b"private plan of room 0"[..]));

    // A plain user may not delete under the default policy; the manager may.
    let denied = b.delete_room(&ids[0]).unwrap_err();
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden));
    a.delete_room(&ids[0]).unwrap();
    assert_eq!(
        b.get_room(&ids[0]).unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(b.list_rooms(None, Paging::default()).unwrap().total, 4);
}

#[test]
fn stale_versions_conflict_unless_forced() {
    let alice = Identity::generate();
    let bridge = bridge_with_users(&[&alice]);
    let a = connect(&bridge.handle.url(), &alice);
    let room = create_room(&a, "versions", &[]);

    let mut first = RoomUpdate::new(room.id.clone());
    first.version = Some(1);
    first.name = Some("first".into());
    a.update_room(first).unwrap();

    let mut stale = RoomUpdate::new(room.id.clone());
    stale.version = Some(1);
    stale.name = Some("stale".into());
    let err = a.update_room(stale.clone()).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert_eq!(a.get_room(&room.id).unwrap().name(), Some("first"));

    stale.force = true;
    let forced = a.update_room(stale).unwrap();
    assert_eq!(forced.name(), Some("stale"));
    assert_eq!(forced.version, 3);
}

#[test]
fn a_changed_policy_takes_effect() {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bridge = bridge_with_users(&[&alice, &bob]);
    let url = bridge.handle.url();
    let (a, b) = (connect(&url, &alice), connect(&url, &bob));
    let room = create_room(&a, "policy", &[bob.user_id()]);

    let mut by_bob = RoomUpdate::new(room.id.clone());
    by_bob.public_meta = Some(b"bob was here".to_vec());
    assert_eq!(
        b.update_room(by_bob.clone()).unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );

    let mut open_up = RoomUpdate::new(room.id.clone());
    open_up.policy = Some(Policy {
        update: Access::User,
        ..Policy::default()
    });
    let opened = a.update_room(open_up).unwrap();
    assert_eq!(opened.policy.update, Access::User);
    assert_eq!(opened.key_epoch, 1, "a policy change is a new signed epoch");
    let updated = b.update_room(by_bob).unwrap();
    assert_eq!(updated.public_meta, b"bob was here");

    // Managers-only visibility: a plain member is told it lacks the right, sees no listing entry and
    // hears no events of the room; an outsider still cannot tell the room exists.
    b.subscribe(EventScope::Context(ContextId::default()))
        .unwrap();
    let mut hide = RoomUpdate::new(room.id.clone());
    hide.policy = Some(Policy {
        get: Access::Manager,
        ..opened.policy
    });
    a.update_room(hide).unwrap();
    assert_eq!(
        b.get_room(&room.id).unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(b.list_rooms(None, Paging::default()).unwrap().total, 0);
    let mut touch = RoomUpdate::new(room.id.clone());
    touch.public_meta = Some(b"managers only now".to_vec());
    a.update_room(touch).unwrap();
    let sentinel = create_room(&b, "bob's own", &[]);
    let bob_saw = events_until(
        &b,
        WAIT,
        |ev| matches!(ev, RoomEvent::Created(r) if r.id == sentinel.id),
    );
    assert_eq!(bob_saw.len(), 1, "bob saw {bob_saw:?}");

    // A plain user cannot change members or policy, even when allowed to update metadata.
    let mut grab = RoomUpdate::new(room.id.clone());
    grab.add_managers = vec![bob.user_id().clone()];
    assert!(b.update_room(grab).is_err());
}

#[test]
fn removed_members_lose_access_and_cannot_decrypt_the_new_epoch() {
    let (alice, bob, carol) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let bridge = bridge_with_users(&[&alice, &bob, &carol]);
    let url = bridge.handle.url();
    let (a, b, c) = (
        connect(&url, &alice),
        connect(&url, &bob),
        connect(&url, &carol),
    );
    let room = create_room(&a, "trio", &[bob.user_id(), carol.user_id()]);
    assert_eq!(c.get_room(&room.id).unwrap().name(), Some("trio"));
    c.subscribe(EventScope::Context(ContextId::default()))
        .unwrap();

    let mut remove = RoomUpdate::new(room.id.clone());
    remove.remove_users = vec![carol.user_id().clone()];
    remove.private_meta = Some(b"after carol".to_vec());
    let updated = a.update_room(remove).unwrap();
    assert_eq!(updated.key_epoch, 1);

    assert_eq!(
        c.get_room(&room.id).unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // Carol hears that she was removed, and nothing of the room's new state.
    let told = events_until(&c, WAIT, |ev| matches!(ev, RoomEvent::RemovedFrom { .. }));
    assert!(
        !told
            .iter()
            .any(|ev| matches!(ev, RoomEvent::Updated(r) if r.key_epoch == 1)),
        "{told:?}"
    );
    let seen_by_bob = b.get_room(&room.id).unwrap();
    assert_eq!(seen_by_bob.private_meta(), Some(&b"after carol"[..]));
    // Even holding the record, Carol's key opens only the old epoch.
    let record = &seen_by_bob.record;
    assert!(record.epochs[1].unwrap_secret(&carol).is_err());
    assert!(record.epochs[0].unwrap_secret(&carol).is_ok());
    let old_secret = record.epochs[0].unwrap_secret(&carol).unwrap();
    assert!(record.meta.open(&old_secret).is_err());

    // Forced rotation (PrivMX forceGenerateNewKey) starts another epoch for the same members.
    let mut rotate = RoomUpdate::new(room.id.clone());
    rotate.rotate_key = true;
    let rotated = a.update_room(rotate).unwrap();
    assert_eq!(rotated.key_epoch, 2);
    assert_eq!(
        b.get_room(&room.id).unwrap().private_meta(),
        Some(&b"after carol"[..])
    );
}

#[test]
fn events_reach_members_only() {
    let (alice, bob, eve) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let bridge = bridge_with_users(&[&alice, &bob, &eve]);
    let url = bridge.handle.url();
    let (a, b, e) = (
        connect(&url, &alice),
        connect(&url, &bob),
        connect(&url, &eve),
    );
    for client in [&a, &b, &e] {
        client
            .subscribe(EventScope::Context(ContextId::default()))
            .unwrap();
    }
    let room = create_room(&a, "members only", &[bob.user_id()]);
    let created = wait_event(&b, WAIT, |ev| matches!(ev, RoomEvent::Created(_))).unwrap();
    let RoomEvent::Created(seen) = created else {
        unreachable!()
    };
    assert_eq!(seen.id, room.id);
    assert_eq!(seen.name(), Some("members only"), "events arrive decrypted");

    // Eve's own room is her sentinel: events are ordered per connection, so anything about Alice's
    // room would have arrived before it.
    let sentinel = create_room(&e, "eve's", &[]);
    let eve_saw = events_until(
        &e,
        WAIT,
        |ev| matches!(ev, RoomEvent::Created(r) if r.id == sentinel.id),
    );
    assert_eq!(eve_saw.len(), 1, "eve saw {eve_saw:?}");

    // Presence: Bob joins, Alice (subscribed) sees it; Eve cannot join.
    let present = b.join_room(&room.id).unwrap();
    assert_eq!(present, vec![bob.user_id().clone()]);
    let joined = wait_event(&a, WAIT, |ev| matches!(ev, RoomEvent::UserJoined { .. })).unwrap();
    assert_eq!(
        joined,
        RoomEvent::UserJoined {
            room_id: room.id.clone(),
            user_id: bob.user_id().clone()
        }
    );
    assert_eq!(
        e.join_room(&room.id).unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(
        a.participants(&room.id).unwrap(),
        vec![bob.user_id().clone()]
    );

    // Bob's connection drops: he leaves.
    drop(b);
    let left = wait_event(&a, WAIT, |ev| matches!(ev, RoomEvent::UserLeft { .. })).unwrap();
    assert_eq!(
        left,
        RoomEvent::UserLeft {
            room_id: room.id.clone(),
            user_id: bob.user_id().clone()
        }
    );
    assert!(a.participants(&room.id).unwrap().is_empty());

    // Deletion reaches members.
    a.delete_room(&room.id).unwrap();
    let sentinel_again = create_room(&e, "eve's second", &[]);
    let eve_saw = events_until(
        &e,
        WAIT,
        |ev| matches!(ev, RoomEvent::Created(r) if r.id == sentinel_again.id),
    );
    assert_eq!(eve_saw.len(), 1, "eve saw {eve_saw:?}");
    assert!(wait_event(&a, WAIT, |ev| matches!(ev, RoomEvent::Deleted { .. })).is_some());
}

#[test]
fn unregistered_keys_are_refused_with_instructions() {
    let alice = Identity::generate();
    let stranger = Identity::generate();
    let bridge = bridge_with_users(&[&alice]);
    let client = streams_client::StreamsClient::start(streams_client::ClientConfig::new(
        bridge.handle.url(),
        stranger.clone(),
    ))
    .unwrap();
    // The first attempt's end says why (the client goes on retrying with backoff).
    let reason = loop {
        match client.events().recv_timeout(WAIT) {
            Ok(ClientEvent::Connection(ConnectionState::Disconnected { reason, .. })) => {
                break reason;
            }
            Ok(ClientEvent::Connection(ConnectionState::Connected { .. })) => {
                panic!("an unregistered key connected")
            }
            Ok(_) => {}
            Err(e) => panic!("no connection attempt ended: {e}"),
        }
    };
    assert!(reason.contains("not registered"), "{reason}");
    assert!(
        reason.contains(&format!("streams-bridge users add {}", stranger.user_id())),
        "{reason}"
    );
    // Members of a room must be registered users too.
    let a = connect(&bridge.handle.url(), &alice);
    let err = a
        .create_room(streams_client::NewRoom {
            name: "x".into(),
            users: vec![stranger.user_id().clone()],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Invalid));

    // A key removed by the administrator while connected is refused at its next request.
    let mut store = streams_bridge::SqliteStore::open(&bridge.db).unwrap();
    use streams_bridge::Store;
    assert!(store.remove_user(alice.user_id()).unwrap());
    let err = a.list_rooms(None, Paging::default()).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotRegistered));
}
