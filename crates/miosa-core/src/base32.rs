//! Lower-case Crockford base32, used for IDs and API keys: no padding, no
//! ambiguous letters (i, l, o, u), double-click selectable.

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes bytes as lower-case Crockford base32 (5 bits per character, MSB first).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// True when every character belongs to the alphabet above.
pub fn is_valid(s: &str) -> bool {
    s.bytes().all(|c| ALPHABET.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_values() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0]), "00");
        assert_eq!(encode(&[0xff]), "zw");
        assert_eq!(encode(&[0xff; 5]), "zzzzzzzz");
        assert_eq!(encode(&[0u8; 16]).len(), 26);
        assert_eq!(encode(&[0u8; 32]).len(), 52);
    }

    #[test]
    fn order_is_preserved_for_equal_lengths() {
        // Time-ordered IDs rely on this: byte order == string order.
        let a = encode(&[0x01, 0x02, 0x03]);
        let b = encode(&[0x01, 0x02, 0x04]);
        let c = encode(&[0x02, 0x00, 0x00]);
        assert!(a < b && b < c);
    }

    proptest::proptest! {
        #[test]
        fn output_is_in_alphabet_and_ordered(x: [u8; 16], y: [u8; 16]) {
            let (ex, ey) = (encode(&x), encode(&y));
            proptest::prop_assert!(is_valid(&ex));
            proptest::prop_assert_eq!(x.cmp(&y), ex.cmp(&ey));
        }
    }
}
