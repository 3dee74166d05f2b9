//! What the scenarios share: a connected client.
use std::time::Duration;

use streams_client::{ClientConfig, StreamsClient};
use streams_proto::Identity;

/// A client of the bridge at `url`, connected. Plain `ws://` to another host is allowed: the
/// scenarios' bridges are on loopback or on private addresses in namespaces of their own.
pub fn client(url: &str, identity: &Identity) -> Result<StreamsClient, String> {
    let mut config = ClientConfig::new(url, identity.clone());
    config.allow_insecure = true;
    let client = StreamsClient::start(config).map_err(|e| e.to_string())?;
    client
        .wait_connected(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(client)
}
