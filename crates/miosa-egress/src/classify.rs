//! Which IP addresses a sandbox may reach: only globally routable ones.
//! Everything that leads back into the host, its network or a cloud
//! metadata service is refused, including the IPv6 forms that embed an IPv4
//! address (mapped, compatible, NAT64, 6to4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` may not be reached, or `None` when it is a public address.
pub(crate) fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (100, 64..=127, _) => "shared (CGNAT)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(reason)
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let seg = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (deprecated compatible).
    if seg[..5] == [0; 5] && (seg[5] == 0xffff || seg[5] == 0) {
        return classify_v4(embedded(seg[6], seg[7]));
    }
    // 64:ff9b::/96, the well-known NAT64 prefix, reaches the IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(seg[6], seg[7]));
    }
    // 2002::/16, 6to4, carries its IPv4 address in bits 16..48.
    if seg[0] == 0x2002 {
        return classify_v4(embedded(seg[1], seg[2]));
    }
    let reason = match seg[0] {
        0x64 if seg[1] == 0xff9b && seg[2] == 1 => "local-use NAT64",
        0x100 if seg[1..4] == [0, 0, 0] => "discard-only",
        0x2001 if seg[1] == 0 => "Teredo",
        0x2001 if seg[1] == 0xdb8 => "documentation",
        s if s & 0xfe00 == 0xfc00 => "unique local",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local",
        s if s & 0xff00 == 0xff00 => "multicast",
        // Only 2000::/3 is allocated as global unicast.
        s if s & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason(s: &str) -> Option<&'static str> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn refuses_what_leads_back_inside() {
        for (addr, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("2002:7f00:0001::1", "loopback"),
            ("2002:c0a8:0101::1", "private"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("fd00:ec2::254", "unique local"),
        ] {
            assert_eq!(reason(addr), Some(why), "{addr}");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "104.18.6.192",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "2606:4700::6810:1",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(reason(addr), None, "{addr}");
        }
    }

    proptest! {
        /// The IPv4-mapped, compatible and NAT64 forms of an address are
        /// judged exactly like the address itself.
        #[test]
        fn embedded_forms_agree(raw: u32) {
            let v4 = Ipv4Addr::from(raw);
            let want = classify_v4(v4);
            let hi = (raw >> 16) as u16;
            let lo = raw as u16;
            let mapped = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, hi, lo);
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo);
            prop_assert_eq!(classify(mapped.into()), want);
            prop_assert_eq!(classify(nat64.into()), want);
            if raw > 1 {
                let compat = Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo);
                prop_assert_eq!(classify(compat.into()), want);
            }
        }

        /// Whatever the standard library calls loopback, private, link-local,
        /// unspecified, multicast or broadcast is refused.
        #[test]
        fn covers_std_categories(raw: u32) {
            let v4 = Ipv4Addr::from(raw);
            if v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
                || v4.is_multicast() || v4.is_broadcast() || v4.is_documentation() {
                prop_assert!(classify(v4.into()).is_some());
            }
        }

        #[test]
        fn covers_std_categories_v6(raw: u128) {
            let v6 = Ipv6Addr::from(raw);
            if v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                || v6.is_unicast_link_local() || v6.is_unique_local() {
                prop_assert!(classify(v6.into()).is_some());
            }
        }
    }
}
