//! Bad input and a hostile bridge: typed errors, nothing half-written, no client fooled.
mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use streams_bridge::{SqliteStore, Store};
use streams_client::{ClientConfig, ClientError, RoomUpdate, StreamsClient};
use streams_proto::bytes::Bytes;
use streams_proto::epoch::Membership;
use streams_proto::wire::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, Request, ServerMessage, auth_transcript,
};
use streams_proto::{CryptoError, EpochRecord, Identity, RoomId};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn recv(ws: &mut Ws) -> ServerMessage {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("bridge answers in time")
            .expect("connection open")
            .expect("no websocket error");
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn send_text(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).await.unwrap();
}

fn error_of(msg: ServerMessage) -> (Option<u64>, ErrorCode) {
    match msg {
        ServerMessage::Response { id, result: Err(e) } => (id, e.code),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn hello(url: &str) -> (Ws, Bytes) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let ServerMessage::Hello { challenge, .. } = recv(&mut ws).await else {
        panic!("no hello")
    };
    (ws, challenge)
}

fn auth(identity: &Identity, challenge: &Bytes) -> String {
    auth_resuming(identity, challenge, None)
}

/// An answer to `challenge` that presents the resume token `resume`.
fn auth_resuming(identity: &Identity, challenge: &Bytes, resume: Option<Bytes>) -> String {
    serde_json::to_string(&ClientMessage::Auth {
        protocol: PROTOCOL_VERSION,
        user_id: identity.user_id().clone(),
        signature: identity.sign(&auth_transcript(challenge.as_slice())),
        resume,
    })
    .unwrap()
}

/// Whether a connection that presented a token was resumed (panics on anything but a welcome).
async fn welcomed_as_resumed(ws: &mut Ws) -> bool {
    match recv(ws).await {
        ServerMessage::Welcome { resumed, .. } => resumed,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_is_good_once_and_only_for_its_own_user() {
    let (alice, mallory) = (Identity::generate(), Identity::generate());
    let bridge = bridge_with_users(&[&alice, &mallory]);
    let url = bridge.handle.url();
    let (mut ws, challenge) = hello(&url).await;
    send_text(&mut ws, auth(&alice, &challenge)).await;
    let ServerMessage::Welcome {
        resume: Some(ticket),
        resumed: false,
        ..
    } = recv(&mut ws).await
    else {
        panic!("a first connection gets a ticket");
    };
    // Dropped without a close: kept for a resume.
    drop(ws);
    for (who, token) in [
        (&mallory, ticket.token.clone()),
        (&alice, Bytes(vec![1, 2, 3])),
        (&alice, Bytes(vec![0; 32])),
    ] {
        let (mut ws, challenge) = hello(&url).await;
        send_text(&mut ws, auth_resuming(who, &challenge, Some(token))).await;
        assert!(!welcomed_as_resumed(&mut ws).await, "a fresh connection");
    }
    let (mut ws, challenge) = hello(&url).await;
    send_text(
        &mut ws,
        auth_resuming(&alice, &challenge, Some(ticket.token.clone())),
    )
    .await;
    assert!(
        welcomed_as_resumed(&mut ws).await,
        "Alice takes her connection back"
    );
    let (mut again, challenge) = hello(&url).await;
    send_text(
        &mut again,
        auth_resuming(&alice, &challenge, Some(ticket.token)),
    )
    .await;
    assert!(
        !welcomed_as_resumed(&mut again).await,
        "a token is good once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_the_connection_carries_on() {
    let alice = Identity::generate();
    let mallory = Identity::generate();
    let bob = Identity::generate();
    let bridge = bridge_with_users(&[&alice, &bob]);
    let url = bridge.handle.url();
    // A well-behaved client connected throughout.
    let bystander = tokio::task::block_in_place(|| connect(&url, &bob));
    let (mut ws, challenge) = hello(&url).await;

    // Before authentication only the handshake is answered.
    send_text(
        &mut ws,
        r#"{"type":"request","id":1,"request":{"op":"ping"}}"#.into(),
    )
    .await;
    assert_eq!(
        error_of(recv(&mut ws).await),
        (Some(1), ErrorCode::NotAuthenticated)
    );
    send_text(&mut ws, "{not json".into()).await;
    assert_eq!(error_of(recv(&mut ws).await), (None, ErrorCode::Malformed));
    // A signature by someone else, and a wrong protocol version.
    let forged = serde_json::to_string(&ClientMessage::Auth {
        protocol: PROTOCOL_VERSION,
        user_id: alice.user_id().clone(),
        signature: mallory.sign(&auth_transcript(challenge.as_slice())),
        resume: None,
    })
    .unwrap();
    send_text(&mut ws, forged).await;
    assert_eq!(error_of(recv(&mut ws).await), (None, ErrorCode::AuthFailed));
    let old = auth(&alice, &challenge).replace(
        &format!("\"protocol\":{PROTOCOL_VERSION}"),
        "\"protocol\":999",
    );
    send_text(&mut ws, old).await;
    assert_eq!(
        error_of(recv(&mut ws).await),
        (None, ErrorCode::ProtocolMismatch)
    );
    send_text(&mut ws, auth(&alice, &challenge)).await;
    assert!(matches!(recv(&mut ws).await, ServerMessage::Welcome { .. }));

    // After authentication: unknown operation, over-size message, wrong shapes, a stale update.
    send_text(
        &mut ws,
        r#"{"type":"request","id":2,"request":{"op":"launch_missiles"}}"#.into(),
    )
    .await;
    assert_eq!(
        error_of(recv(&mut ws).await),
        (Some(2), ErrorCode::Malformed)
    );
    let huge = format!(
        r#"{{"type":"request","id":3,"request":{{"op":"get_room","room_id":"{}"}}}}"#,
        "a".repeat(2 << 20)
    );
    send_text(&mut ws, huge).await;
    assert_eq!(error_of(recv(&mut ws).await), (None, ErrorCode::TooLarge));
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(error_of(recv(&mut ws).await), (None, ErrorCode::Malformed));
    send_text(
        &mut ws,
        r#"{"type":"request","id":4,"request":{"op":"get_room","room_id":"no/slashes"}}"#.into(),
    )
    .await;
    assert_eq!(
        error_of(recv(&mut ws).await),
        (Some(4), ErrorCode::Malformed)
    );

    // A genesis signed by someone other than the caller, and one with a broken signature.
    let membership = Membership {
        users: vec![],
        managers: vec![],
        policy: Default::default(),
    };
    let (genesis, secret) =
        EpochRecord::genesis(&mallory, Default::default(), membership.clone(), 0).unwrap();
    let meta = streams_proto::SignedMeta::seal(
        &mallory,
        &genesis,
        &secret,
        1,
        vec![],
        &Default::default(),
    )
    .unwrap();
    let create = |id, genesis: EpochRecord, meta| {
        serde_json::to_string(&ClientMessage::Request {
            id,
            request: Request::CreateRoom {
                genesis: Box::new(genesis),
                meta: Box::new(meta),
            },
        })
        .unwrap()
    };
    send_text(&mut ws, create(5, genesis, meta)).await;
    assert_eq!(error_of(recv(&mut ws).await), (Some(5), ErrorCode::Invalid));
    let (mut genesis, secret) =
        EpochRecord::genesis(&alice, Default::default(), membership, 0).unwrap();
    let meta =
        streams_proto::SignedMeta::seal(&alice, &genesis, &secret, 1, vec![], &Default::default())
            .unwrap();
    genesis.created_at += 1;
    send_text(&mut ws, create(6, genesis.clone(), meta)).await;
    assert_eq!(
        error_of(recv(&mut ws).await),
        (Some(6), ErrorCode::InvalidSignature)
    );

    // Still alive, and nothing was written.
    send_text(
        &mut ws,
        r#"{"type":"request","id":7,"request":{"op":"ping"}}"#.into(),
    )
    .await;
    assert!(matches!(
        recv(&mut ws).await,
        ServerMessage::Response {
            id: Some(7),
            result: Ok(_)
        }
    ));
    let store = SqliteStore::open(&bridge.db).unwrap();
    assert_eq!(
        store
            .list_rooms(&Default::default(), alice.user_id(), Default::default())
            .unwrap()
            .1,
        0
    );

    // The other client never noticed.
    tokio::task::block_in_place(|| {
        let room = create_room(&bystander, "unbothered", &[]);
        assert_eq!(
            bystander.get_room(&room.id).unwrap().name(),
            Some("unbothered")
        );
        let disconnects = bystander
            .events()
            .try_iter()
            .filter(|e| {
                matches!(
                    e,
                    streams_client::ClientEvent::Connection(
                        streams_client::ConnectionState::Disconnected { .. }
                    )
                )
            })
            .count();
        assert_eq!(disconnects, 0);
    });
}

/// Rewrites a stored room as a malicious bridge operator could.
fn tamper(
    bridge: &TestBridge,
    room_id: &RoomId,
    edit: impl FnOnce(&mut streams_proto::RoomRecord),
) {
    let mut store = SqliteStore::open(&bridge.db).unwrap();
    let mut room = store.room(room_id).unwrap().unwrap();
    assert!(store.delete_room(room_id).unwrap());
    edit(&mut room);
    store.create_room(&room).unwrap();
}

#[test]
fn a_bridge_that_forges_members_or_keys_is_caught() {
    let (alice, bob, mallory) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let bridge = bridge_with_users(&[&alice, &bob, &mallory]);
    let url = bridge.handle.url();
    let (a, b) = (connect(&url, &alice), connect(&url, &bob));
    let room = create_room(&a, "target", &[bob.user_id()]);
    b.get_room(&room.id).unwrap();

    // 1. The bridge appends an epoch, signed by Mallory (not a manager), that adds Mallory.
    tamper(&bridge, &room.id, |r| {
        let latest = r.latest().unwrap().clone();
        let mut membership = latest.membership();
        membership.users.push(mallory.user_id().clone());
        let forged = forge_next(&latest, &mallory, membership);
        r.epochs.push(forged.0);
        r.meta = streams_proto::SignedMeta::seal(
            &mallory,
            &r.epochs[1],
            &forged.1,
            r.version + 1,
            vec![],
            &Default::default(),
        )
        .unwrap();
    });
    let err = b.get_room(&room.id).unwrap_err();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::NotAManager { .. })),
        "{err:?}"
    );

    // 2. The bridge slips Mallory into the signed member list without re-signing.
    tamper(&bridge, &room.id, |r| {
        r.epochs.truncate(1);
        r.meta = room.record.meta.clone();
        r.epochs[0].users.push(mallory.user_id().clone());
        r.epochs[0].users.sort();
    });
    let err = b.get_room(&room.id).unwrap_err();
    assert!(matches!(err, ClientError::Crypto(_)), "{err:?}");

    // 3. The bridge swaps the metadata for its own.
    tamper(&bridge, &room.id, |r| {
        *r = room.record.clone();
        r.meta.public_meta = Bytes(b"bridge says hi".to_vec());
    });
    let err = a.get_room(&room.id).unwrap_err();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::BadSignature { .. })),
        "{err:?}"
    );

    // 4. A look-alike room under Alice's id, properly signed by Mallory, shown to someone who has
    //    never seen the room: the id is derived from its creator, so it does not verify.
    let (dave, dave_trust) = (
        Identity::generate(),
        tempfile::NamedTempFile::new().unwrap(),
    );
    tamper(&bridge, &room.id, |r| {
        let membership = Membership {
            users: vec![bob.user_id().clone(), dave.user_id().clone()],
            managers: vec![mallory.user_id().clone()],
            policy: Default::default(),
        };
        let (mut fake, secret) =
            EpochRecord::genesis(&mallory, Default::default(), membership, 0).unwrap();
        fake.room_id = r.id.clone();
        r.epochs = vec![fake];
        r.meta = streams_proto::SignedMeta::seal(
            &mallory,
            &r.epochs[0],
            &secret,
            1,
            vec![],
            &Default::default(),
        )
        .unwrap();
    });
    {
        let mut store = SqliteStore::open(&bridge.db).unwrap();
        store
            .add_user(dave.user_id(), &Default::default(), 0)
            .unwrap();
    }
    let d = connect_with_trust(&url, &dave, dave_trust.path());
    let err = d.get_room(&room.id).unwrap_err();
    assert!(matches!(err, ClientError::Crypto(_)), "{err:?}");

    // 5. Rollback of the chain, remembered across client restarts: Bob (with a trust file) sees
    //    epoch 1; later a new Bob process is served the old chain.
    tamper(&bridge, &room.id, |r| *r = room.record.clone());
    let bob_trust = tempfile::NamedTempFile::new().unwrap();
    drop(b);
    let mut rotate = RoomUpdate::new(room.id.clone());
    rotate.rotate_key = true;
    a.update_room(rotate).unwrap();
    {
        let b = connect_with_trust(&url, &bob, bob_trust.path());
        assert_eq!(b.get_room(&room.id).unwrap().key_epoch, 1);
    }
    let rotated = SqliteStore::open(&bridge.db)
        .unwrap()
        .room(&room.id)
        .unwrap()
        .unwrap();
    tamper(&bridge, &room.id, |r| *r = room.record.clone());
    let b = connect_with_trust(&url, &bob, bob_trust.path());
    let err = b.get_room(&room.id).unwrap_err();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::ChainRollback { .. })),
        "{err:?}"
    );

    // 6. Rollback of metadata within an epoch: Bob has seen version 3; the bridge serves version 2.
    tamper(&bridge, &room.id, |r| *r = rotated.clone());
    let mut touch = RoomUpdate::new(room.id.clone());
    touch.public_meta = Some(b"v3".to_vec());
    a.update_room(touch).unwrap();
    assert_eq!(b.get_room(&room.id).unwrap().version, 3);
    tamper(&bridge, &room.id, |r| *r = rotated.clone());
    let err = b.get_room(&room.id).unwrap_err();
    assert!(
        matches!(err, ClientError::Crypto(CryptoError::ChainRollback { .. })),
        "{err:?}"
    );
}

fn connect_with_trust(url: &str, identity: &Identity, trust: &std::path::Path) -> StreamsClient {
    let mut config = ClientConfig::new(url, identity.clone());
    config.trust_file = Some(trust.to_path_buf());
    // NamedTempFile creates an empty file; the trust store wants none or its own JSON.
    if std::fs::metadata(trust)
        .map(|m| m.len() == 0)
        .unwrap_or(false)
    {
        std::fs::remove_file(trust).unwrap();
    }
    let client = StreamsClient::start(config).unwrap();
    client.wait_connected(Duration::from_secs(30)).unwrap();
    client
}

/// Builds a successor record as if `author` were allowed to (the bridge's forgery).
fn forge_next(
    prev: &EpochRecord,
    author: &Identity,
    membership: Membership,
) -> (EpochRecord, streams_proto::RoomSecret) {
    // A fake genesis gives a validly self-signed record; re-home it onto the real chain.
    let (mut fake, secret) =
        EpochRecord::genesis(author, prev.context_id.clone(), membership, 0).unwrap();
    fake.room_id = prev.room_id.clone();
    fake.nonce = Bytes::default();
    fake.epoch = prev.epoch + 1;
    fake.prev_hash = Bytes(prev.hash().to_vec());
    (fake, secret)
}
