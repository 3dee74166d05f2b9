//! Which session a STUN request is for, read from its USERNAME attribute (RFC 8445 §7.2.2:
//! "receiver's ufrag:sender's ufrag") without parsing the rest: the core keeps its sessions by
//! their local ufrag, so a connectivity check from a new address finds its session in one lookup
//! instead of asking every session. The session's str0m still checks the message's integrity.

/// STUN's magic cookie (RFC 5389), bytes 4 to 7 of every message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute's type.
const USERNAME: u16 = 0x0006;
/// A STUN header's length.
const HEADER: usize = 20;

/// The local ufrag a STUN message's USERNAME names (the part before ':'), if it is a STUN
/// message with one.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < HEADER || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let attributes = datagram.get(HEADER..HEADER + length)?;
    let mut at = 0;
    while at + 4 <= attributes.len() {
        let kind = u16::from_be_bytes([attributes[at], attributes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([attributes[at + 2], attributes[at + 3]]));
        let value = attributes.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Values are padded to four bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attributes {
            body.extend(kind.to_be_bytes());
            body.extend((value.len() as u16).to_be_bytes());
            body.extend(*value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend((body.len() as u16).to_be_bytes());
        m.extend(MAGIC_COOKIE);
        m.extend([7u8; 12]);
        m.extend(body);
        m
    }

    #[test]
    fn the_receiver_s_ufrag_is_read_past_other_attributes() {
        let m = message(&[(0x0024, &[0, 0, 0, 1]), (USERNAME, b"sfuUfrag:peer")]);
        assert_eq!(local_ufrag(&m), Some("sfuUfrag"));
        // An attribute whose value needs padding before USERNAME.
        let m = message(&[(0x8022, b"abcde"), (USERNAME, b"x:y")]);
        assert_eq!(local_ufrag(&m), Some("x"));
    }

    #[test]
    fn anything_else_names_no_session() {
        assert_eq!(local_ufrag(&message(&[(0x0024, &[0, 0, 0, 1])])), None);
        assert_eq!(local_ufrag(&[0u8; 8]), None);
        let mut wrong_cookie = message(&[(USERNAME, b"a:b")]);
        wrong_cookie[4] = 0;
        assert_eq!(local_ufrag(&wrong_cookie), None);
        // A length that runs past the datagram, and an attribute that does.
        let mut long = message(&[(USERNAME, b"a:b")]);
        long[3] = 200;
        assert_eq!(local_ufrag(&long), None);
        let mut truncated = message(&[(USERNAME, b"abcd:efgh")]);
        truncated.truncate(truncated.len() - 4);
        truncated[3] -= 4;
        assert_eq!(local_ufrag(&truncated), None);
        assert_eq!(local_ufrag(&message(&[(USERNAME, &[0xFF, 0xFE])])), None);
    }
}
