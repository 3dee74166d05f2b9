//! Between the protocol's [`MediaId`] and str0m's [`Mid`] (both 16 bytes, inline), without the
//! allocation of `Mid::from(&str)`.
use str0m::media::Mid;
use streams_proto::MediaId;

/// str0m's form of a media id.
pub fn to_mid(id: MediaId) -> Mid {
    // str0m pads a mid with spaces and trims them when it is read.
    let mut bytes = [b' '; 16];
    let text = id.as_str().as_bytes();
    bytes[..text.len()].copy_from_slice(text);
    Mid::from_array(bytes)
}

/// The protocol's form of a str0m mid; `None` for one the protocol cannot carry (str0m makes its
/// own mids of letters and digits, and keeps an offer's after turning other characters into `_`).
pub fn to_media_id(mid: Mid) -> Option<MediaId> {
    MediaId::parse(&mid).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_convert_both_ways() {
        let id = MediaId::parse("a_1").unwrap();
        assert_eq!(&*to_mid(id), "a_1");
        assert_eq!(to_mid(id), Mid::from("a_1"));
        assert_eq!(to_media_id(to_mid(id)), Some(id));
        let long = MediaId::parse("abcdefghijklmnop").unwrap();
        assert_eq!(to_media_id(to_mid(long)), Some(long));
        let made = Mid::new();
        assert_eq!(to_media_id(made).unwrap().as_str(), &*made);
    }
}
