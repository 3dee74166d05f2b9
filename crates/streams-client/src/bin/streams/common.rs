//! What every command shares: the options that come before it (bridge, key file, output), the
//! key, and the connection to the bridge.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use streams_client::{ClientConfig, StreamsClient, TlsTrust};
use streams_proto::{CertFingerprint, Identity, RoomId};

/// The options every command takes.
#[derive(Args)]
pub(crate) struct Globals {
    /// The bridge's WebSocket URL.
    #[arg(
        long,
        global = true,
        env = "STREAMS_BRIDGE",
        default_value = "ws://127.0.0.1:7800"
    )]
    pub bridge: String,
    /// Trust exactly the bridge certificate with this SHA-256 fingerprint (`AB:CD:…`, as
    /// `streams-bridge --tls-self-signed` prints it) instead of the platform's authorities.
    #[arg(long, global = true, env = "STREAMS_BRIDGE_CERT_SHA256")]
    pub bridge_cert_sha256: Option<CertFingerprint>,
    /// Allow plain ws:// to a host other than this machine (signaling unencrypted: private test
    /// networks only).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Your key file (see `streams keygen`). Default: ~/.config/streams/key.
    #[arg(long, global = true, env = "STREAMS_KEY")]
    pub key: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

pub(crate) fn default_key_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("streams").join("key")
}

pub(crate) fn room_id(text: &str) -> Result<RoomId, String> {
    RoomId::parse(text).map_err(|e| e.to_string())
}

/// Connects as `identity` (loaded by [`identity`]).
pub(crate) fn connect(cli: &Globals, identity: &Identity) -> Result<StreamsClient, String> {
    let path = key_path(cli);
    let mut config = ClientConfig::new(cli.bridge.clone(), identity.clone());
    config.request_timeout = Duration::from_secs(10);
    config.allow_insecure = cli.insecure;
    if let Some(pin) = cli.bridge_cert_sha256 {
        config.tls = TlsTrust::Pinned(pin);
    }
    // Rooms verified by this key are remembered beside it, so a bridge cannot roll them back later.
    let mut trust = path.clone().into_os_string();
    trust.push(".trust");
    config.trust_file = Some(PathBuf::from(trust));
    let client = StreamsClient::start(config).map_err(|e| e.to_string())?;
    client
        .wait_connected(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(client)
}

pub(crate) fn key_path(cli: &Globals) -> PathBuf {
    cli.key.clone().unwrap_or_else(default_key_path)
}

pub(crate) fn identity(cli: &Globals) -> Result<Identity, String> {
    Identity::load(&key_path(cli)).map_err(|e| e.to_string())
}
