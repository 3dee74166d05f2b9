//! Signaling over TLS: a self-signed bridge reached with its fingerprint pinned, the errors a client
//! names when the certificate is not the one it trusts (fingerprint, issuer, name), and a TLS port
//! that speaks nothing else.
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use streams_bridge::tls::pem_block;
use streams_bridge::{Bridge, BridgeConfig, BridgeHandle, TlsSource};
use streams_client::{ClientConfig, ClientError, ConnectError, StreamsClient, TlsError, TlsTrust};
use streams_proto::{CertFingerprint, Identity};

/// Long enough for a connection on loopback, short enough that a wrong answer shows quickly.
const CONNECT: Duration = Duration::from_secs(15);

fn tls_bridge(source: TlsSource) -> BridgeHandle {
    Bridge::spawn(BridgeConfig {
        tls: Some(source),
        ..BridgeConfig::ephemeral()
    })
    .unwrap()
}

/// Starts a client of `url` trusting `trust` and waits at most `wait` for it to connect.
fn try_connect(url: &str, trust: TlsTrust, wait: Duration) -> Result<StreamsClient, ClientError> {
    let mut config = ClientConfig::new(url, Identity::generate());
    config.tls = trust;
    let client = StreamsClient::start(config)?;
    client.wait_connected(wait).map(|_| client)
}

#[test]
fn a_pinned_self_signed_bridge_connects_and_other_certificates_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = tls_bridge(TlsSource::SelfSigned {
        dir: dir.path().to_owned(),
        names: vec!["localhost".into(), "127.0.0.1".into()],
    });
    let url = bridge.url();
    assert!(url.starts_with("wss://"), "{url}");
    let pin = bridge.cert_fingerprint().unwrap();

    let member =
        try_connect(&url, TlsTrust::Pinned(pin), CONNECT).expect("a pinned client connects");
    member
        .create_room(streams_client::NewRoom {
            name: "Over TLS".into(),
            ..Default::default()
        })
        .expect("requests work over wss://");

    // A wrong pin is refused with both fingerprints, at once (retrying cannot help).
    let wrong = CertFingerprint::of_der(b"some other certificate");
    let began = Instant::now();
    match try_connect(&url, TlsTrust::Pinned(wrong), CONNECT) {
        Err(ClientError::Connect(ConnectError::Tls(TlsError::FingerprintMismatch {
            expected,
            presented,
        }))) => {
            assert_eq!((expected, presented), (wrong, pin));
        }
        other => panic!("expected a fingerprint mismatch, got {:?}", other.err()),
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "reported without waiting out the timeout"
    );
    println!("wrong pin refused in {:?}", began.elapsed());

    // The platform's authorities did not issue a self-signed certificate.
    match try_connect(&url, TlsTrust::PlatformRoots, CONNECT) {
        Err(ClientError::Connect(ConnectError::Tls(TlsError::UnknownIssuer))) => {}
        other => panic!("expected an unknown issuer, got {:?}", other.err()),
    }

    // The port speaks only TLS: a plain WebSocket gets nowhere, and the bridge carries on.
    let plain = url.replacen("wss://", "ws://", 1);
    let refused = try_connect(&plain, TlsTrust::PlatformRoots, Duration::from_secs(3));
    assert!(
        matches!(refused, Err(ClientError::Connect(_))),
        "plain ws:// to the TLS port: {:?}",
        refused.err()
    );
    assert_eq!(
        bridge.connection_count(),
        1,
        "only the pinned member is connected"
    );
    assert!(try_connect(&url, TlsTrust::Pinned(pin), CONNECT).is_ok());
}

#[test]
fn a_certificate_from_a_trusted_ca_is_checked_against_the_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert, key_file) = (dir.path().join("bridge.crt"), dir.path().join("bridge.key"));
    std::fs::write(&cert, pem_block("CERTIFICATE", leaf.der())).unwrap();
    std::fs::write(&key_file, pem_block("PRIVATE KEY", &key.serialize_der())).unwrap();
    let bridge = tls_bridge(TlsSource::Files {
        cert,
        key: key_file,
    });
    let port = bridge.addr().port();
    let roots = TlsTrust::Roots(vec![ca.der().to_vec()]);

    // Issued for "localhost" by a trusted CA: connecting by that name works.
    assert!(try_connect(&format!("wss://localhost:{port}"), roots.clone(), CONNECT).is_ok());
    // The same certificate reached by its address is not valid for it.
    match try_connect(&format!("wss://127.0.0.1:{port}"), roots, CONNECT) {
        Err(ClientError::Connect(ConnectError::Tls(TlsError::NameMismatch { host }))) => {
            assert_eq!(host, "127.0.0.1");
        }
        other => panic!("expected a name mismatch, got {:?}", other.err()),
    }
}

#[test]
fn plain_ws_to_another_machine_is_refused_before_connecting() {
    let config = ClientConfig::new("ws://10.1.2.3:7800", Identity::generate());
    match StreamsClient::start(config) {
        Err(ClientError::Connect(ConnectError::Insecure { host })) => assert_eq!(host, "10.1.2.3"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
}
