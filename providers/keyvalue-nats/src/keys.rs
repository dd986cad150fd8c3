//! Keys as JetStream KV stores them. A KV key may only use `[-/_=.a-zA-Z0-9]` and may not
//! start or end with `.` (it is part of a subject); any other key is stored as `=` followed
//! by its base64url encoding. Keys that themselves start with `=` are always encoded, so the
//! two forms never collide, and keys other clients wrote in plain form read back unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn storable(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && !key.starts_with('=')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

/// The stored form of `key`.
pub fn encode(key: &str) -> String {
    if storable(key) {
        key.to_string()
    } else {
        format!("={}", URL_SAFE_NO_PAD.encode(key.as_bytes()))
    }
}

/// The key a stored form stands for (`None` if it is not one this encoding produces).
pub fn decode(stored: &str) -> Option<String> {
    match stored.strip_prefix('=') {
        None => Some(stored.to_string()),
        Some(b64) => URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_plain_keys_stay_plain() {
        for key in [
            "a", "a/b.c", "x_y-z", "ключ", "a b", "", ".x", "x.", "a..b", "=", "=abc", "*", ">",
        ] {
            let stored = encode(key);
            assert_eq!(
                decode(&stored).as_deref(),
                Some(key),
                "{key:?} → {stored:?}"
            );
            assert!(
                stored
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{stored:?}"
            );
        }
        assert_eq!(encode("users/42.name"), "users/42.name");
        assert!(encode("=abc").starts_with('='));
        assert_ne!(encode("=abc"), "=abc");
    }
}
