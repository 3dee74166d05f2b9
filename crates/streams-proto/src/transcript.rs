//! [`Transcript`]: the unambiguous byte strings that get signed and bound as AEAD associated data.
//!
//! Every field is length-prefixed, and every transcript starts with a domain label, so no signature made
//! for one purpose verifies for another.

/// Builds a domain-separated, length-prefixed byte string.
pub struct Transcript(Vec<u8>);

impl Transcript {
    /// Starts a transcript for one purpose.
    pub fn new(label: &str) -> Self {
        let mut t = Transcript(Vec::with_capacity(256));
        t.bytes(label.as_bytes());
        t
    }

    /// Appends a length-prefixed byte field.
    pub fn bytes(&mut self, field: &[u8]) -> &mut Self {
        self.0
            .extend_from_slice(&(field.len() as u64).to_be_bytes());
        self.0.extend_from_slice(field);
        self
    }

    /// Appends a length-prefixed text field.
    pub fn text(&mut self, field: &str) -> &mut Self {
        self.bytes(field.as_bytes())
    }

    /// Appends a fixed-width number.
    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// The finished bytes.
    pub fn finish(&self) -> &[u8] {
        &self.0
    }
}
