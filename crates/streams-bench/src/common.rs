//! What the scenarios share: a connected client.
use std::time::Duration;

use streams_client::{ClientConfig, StreamsClient};
use streams_proto::Identity;

/// A client of the bridge at `url`, connected.
pub fn client(url: &str, identity: &Identity) -> Result<StreamsClient, String> {
    let client = StreamsClient::start(ClientConfig::new(url, identity.clone()))
        .map_err(|e| e.to_string())?;
    client
        .wait_connected(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(client)
}
