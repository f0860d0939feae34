//! Which addresses the egress proxy refuses to connect to, whatever name
//! resolved to them: a pure function of the address, the profile's
//! `allowPrivate` ranges and the cluster's own ranges (`--deny-cidr`).
//!
//! ```text
//!   always       unspecified, loopback, link-local, multicast, broadcast,
//!                reserved (0/8, 240/4), metadata (169.254.169.254,
//!                fd00:ec2::254, 100.100.100.200), Teredo, site-local
//!   cluster      every --deny-cidr (pod and service ranges, node addresses)
//!   private      10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7,
//!                unless inside the profile's allowPrivate
//!   IPv6 forms that carry an IPv4 address (::ffff:a.b.c.d, ::a.b.c.d,
//!   64:ff9b::a.b.c.d, 2002:aabb:ccdd::) are judged by that address.
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// `0.0.0.0`, `::`, and the rest of `0/8`.
    Unspecified,
    /// `127/8`, `::1`.
    Loopback,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud metadata address (refused even when private ranges are allowed).
    Metadata,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240/4`, Teredo `2001::/32`, site-local `fec0::/10`.
    Reserved,
    /// A private range the profile does not allow.
    Private,
    /// One of the cluster's ranges (`--deny-cidr`).
    Cluster,
}

impl Denied {
    /// A bounded name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Unspecified => "unspecified",
            Denied::Loopback => "loopback",
            Denied::LinkLocal => "link-local",
            Denied::Metadata => "metadata",
            Denied::Multicast => "multicast",
            Denied::Broadcast => "broadcast",
            Denied::Reserved => "reserved",
            Denied::Private => "private",
            Denied::Cluster => "cluster",
        }
    }
}

const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn v4_in(ip: Ipv4Addr, base: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(base)) & mask
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, other than `::` and `::1`), NAT64
/// (`64:ff9b::/96`) or 6to4 (`2002:aabb:ccdd::/48`).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Why `ip` must not be reached, if it must not: `allow_private` are the
/// profile's private ranges a host may resolve into, `deny` the cluster's
/// own ranges (which win over `allow_private`).
pub fn denied(ip: IpAddr, allow_private: &[IpNet], deny: &[IpNet]) -> Option<Denied> {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4, allow_private, deny),
        IpAddr::V6(v6) => denied_v6(v6, allow_private, deny),
    }
}

fn denied_v4(ip: Ipv4Addr, allow_private: &[IpNet], deny: &[IpNet]) -> Option<Denied> {
    if METADATA_V4.contains(&ip) {
        return Some(Denied::Metadata);
    }
    if ip == Ipv4Addr::BROADCAST {
        return Some(Denied::Broadcast);
    }
    let always = [
        ([0, 0, 0, 0], 8, Denied::Unspecified),
        ([127, 0, 0, 0], 8, Denied::Loopback),
        ([169, 254, 0, 0], 16, Denied::LinkLocal),
        ([224, 0, 0, 0], 4, Denied::Multicast),
        ([240, 0, 0, 0], 4, Denied::Reserved),
    ];
    for (base, prefix, why) in always {
        if v4_in(ip, base, prefix) {
            return Some(why);
        }
    }
    if in_any(deny, IpAddr::V4(ip)) {
        return Some(Denied::Cluster);
    }
    let private = [
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([100, 64, 0, 0], 10),
    ];
    if private.iter().any(|(b, p)| v4_in(ip, *b, *p)) && !in_any(allow_private, IpAddr::V4(ip)) {
        return Some(Denied::Private);
    }
    None
}

fn denied_v6(ip: Ipv6Addr, allow_private: &[IpNet], deny: &[IpNet]) -> Option<Denied> {
    if ip == METADATA_V6 {
        return Some(Denied::Metadata);
    }
    if ip.is_unspecified() {
        return Some(Denied::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Denied::Loopback);
    }
    if in_any(deny, IpAddr::V6(ip)) {
        return Some(Denied::Cluster);
    }
    if let Some(v4) = embedded_v4(ip) {
        return denied_v4(v4, allow_private, deny);
    }
    let s = ip.segments();
    if s[0] & 0xffc0 == 0xfe80 {
        return Some(Denied::LinkLocal);
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some(Denied::Multicast);
    }
    // Teredo hides an IPv4 address (obfuscated); site-local is deprecated.
    if (s[0] == 0x2001 && s[1] == 0) || s[0] & 0xffc0 == 0xfec0 {
        return Some(Denied::Reserved);
    }
    if s[0] & 0xfe00 == 0xfc00 && !in_any(allow_private, IpAddr::V6(ip)) {
        return Some(Denied::Private);
    }
    None
}

/// The deny side of the egress proxy: the cluster's ranges, and (in tests
/// only) the loopback listeners a test allows itself.
#[derive(Clone, Debug, Default)]
pub struct DenySet {
    deny: Vec<IpNet>,
    exempt: Vec<IpNet>,
}

impl DenySet {
    /// The cluster's ranges (`--deny-cidr`), refused on top of the fixed ones.
    pub fn new(deny: Vec<IpNet>) -> Self {
        Self {
            deny,
            exempt: Vec::new(),
        }
    }

    /// For tests only (feature `testing`): addresses in `exempt` pass
    /// although the rules refuse them (a test's loopback listener).
    #[cfg(feature = "testing")]
    pub fn exempting_for_tests(deny: Vec<IpNet>, exempt: Vec<IpNet>) -> Self {
        Self { deny, exempt }
    }

    /// Why `ip` is refused under a profile's `allow_private`, if it is.
    pub fn check(&self, ip: IpAddr, allow_private: &[IpNet]) -> Option<Denied> {
        if in_any(&self.exempt, ip) {
            return None;
        }
        denied(ip, allow_private, &self.deny)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn judge(s: &str) -> Option<Denied> {
        denied(ip(s), &[], &[])
    }

    #[test]
    fn refuses_the_fixed_ipv4_ranges() {
        for (a, why) in [
            ("0.0.0.0", Denied::Unspecified),
            ("0.1.2.3", Denied::Unspecified),
            ("127.0.0.1", Denied::Loopback),
            ("127.255.255.254", Denied::Loopback),
            ("169.254.0.1", Denied::LinkLocal),
            ("169.254.169.254", Denied::Metadata),
            ("100.100.100.200", Denied::Metadata),
            ("224.0.0.1", Denied::Multicast),
            ("239.255.255.255", Denied::Multicast),
            ("240.0.0.1", Denied::Reserved),
            ("255.255.255.255", Denied::Broadcast),
            ("10.1.2.3", Denied::Private),
            ("172.16.0.1", Denied::Private),
            ("172.31.255.255", Denied::Private),
            ("192.168.1.1", Denied::Private),
            ("100.64.0.1", Denied::Private),
            ("100.127.255.255", Denied::Private),
        ] {
            assert_eq!(judge(a), Some(why), "{a}");
        }
    }

    #[test]
    fn allows_public_and_documentation_ipv4() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.5",
            "169.253.255.255",
            "223.255.255.255",
        ] {
            assert_eq!(judge(a), None, "{a}");
        }
    }

    #[test]
    fn refuses_the_fixed_ipv6_ranges() {
        for (a, why) in [
            ("::", Denied::Unspecified),
            ("::1", Denied::Loopback),
            ("fe80::1", Denied::LinkLocal),
            ("febf::1", Denied::LinkLocal),
            ("fd00:ec2::254", Denied::Metadata),
            ("ff02::1", Denied::Multicast),
            ("fc00::1", Denied::Private),
            ("fd12:3456::1", Denied::Private),
            ("2001:0:4136:e378::1", Denied::Reserved),
            ("fec0::1", Denied::Reserved),
        ] {
            assert_eq!(judge(a), Some(why), "{a}");
        }
        for a in ["2606:4700::1111", "2001:db8::1", "2a00:1450:4001::200e"] {
            assert_eq!(judge(a), None, "{a}");
        }
    }

    #[test]
    fn ipv6_forms_that_carry_ipv4_are_judged_by_it() {
        for (a, why) in [
            ("::ffff:127.0.0.1", Denied::Loopback),
            ("::ffff:169.254.169.254", Denied::Metadata),
            ("::ffff:10.0.0.1", Denied::Private),
            ("::127.0.0.1", Denied::Loopback),
            ("::10.0.0.1", Denied::Private),
            ("::169.254.169.254", Denied::Metadata),
            ("64:ff9b::127.0.0.1", Denied::Loopback),
            ("64:ff9b::a9fe:a9fe", Denied::Metadata),
            ("64:ff9b::192.168.0.1", Denied::Private),
            ("2002:7f00:1::", Denied::Loopback),
            ("2002:a9fe:a9fe::1", Denied::Metadata),
            ("2002:0a00:0001::", Denied::Private),
            ("::ffff:0.0.0.0", Denied::Unspecified),
        ] {
            assert_eq!(judge(a), Some(why), "{a}");
        }
        for a in ["::ffff:1.1.1.1", "64:ff9b::8.8.8.8", "2002:0808:0808::1"] {
            assert_eq!(judge(a), None, "{a}");
        }
        assert_eq!(
            embedded_v4("2002:c0a8:0101::".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(embedded_v4(Ipv6Addr::LOCALHOST), None);
        assert_eq!(embedded_v4(Ipv6Addr::UNSPECIFIED), None);
    }

    #[test]
    fn allow_private_opens_only_its_own_private_range() {
        let allow = [net("10.20.0.0/16"), net("fd00:1::/32")];
        assert_eq!(denied(ip("10.20.1.1"), &allow, &[]), None);
        assert_eq!(denied(ip("::ffff:10.20.1.1"), &allow, &[]), None);
        assert_eq!(denied(ip("fd00:1::5"), &allow, &[]), None);
        assert_eq!(denied(ip("10.21.1.1"), &allow, &[]), Some(Denied::Private));
        assert_eq!(denied(ip("fd00:2::5"), &allow, &[]), Some(Denied::Private));
        // A profile that allows everything private still never reaches these.
        let wide = [net("0.0.0.0/0"), net("::/0")];
        for (a, why) in [
            ("100.100.100.200", Denied::Metadata),
            ("169.254.169.254", Denied::Metadata),
            ("fd00:ec2::254", Denied::Metadata),
            ("127.0.0.1", Denied::Loopback),
            ("::ffff:169.254.169.254", Denied::Metadata),
            ("fe80::1", Denied::LinkLocal),
        ] {
            assert_eq!(denied(ip(a), &wide, &[]), Some(why), "{a}");
        }
    }

    #[test]
    fn cluster_ranges_are_refused_even_when_private_is_allowed() {
        let deny = [
            net("10.96.0.0/12"),
            net("10.244.0.0/16"),
            net("203.0.113.7/32"),
        ];
        let allow = [net("10.0.0.0/8")];
        assert_eq!(
            denied(ip("10.96.0.1"), &allow, &deny),
            Some(Denied::Cluster)
        );
        assert_eq!(
            denied(ip("10.244.3.4"), &allow, &deny),
            Some(Denied::Cluster)
        );
        assert_eq!(denied(ip("203.0.113.7"), &[], &deny), Some(Denied::Cluster));
        assert_eq!(
            denied(ip("::ffff:203.0.113.7"), &[], &deny),
            Some(Denied::Cluster)
        );
        assert_eq!(denied(ip("10.1.0.1"), &allow, &deny), None);
    }

    #[test]
    fn the_test_exemption_passes_only_its_listed_addresses() {
        let exempt = DenySet {
            deny: Vec::new(),
            exempt: vec![net("127.0.0.1/32")],
        };
        assert_eq!(exempt.check(ip("127.0.0.1"), &[]), None);
        assert_eq!(exempt.check(ip("127.0.0.2"), &[]), Some(Denied::Loopback));
        assert_eq!(
            DenySet::new(Vec::new()).check(ip("127.0.0.1"), &[]),
            Some(Denied::Loopback)
        );
    }

    fn v4_of(bits: u32) -> Ipv4Addr {
        Ipv4Addr::from(bits)
    }

    fn mapped_forms(v4: Ipv4Addr) -> Vec<Ipv6Addr> {
        let o = v4.octets();
        let hi = u16::from_be_bytes([o[0], o[1]]);
        let lo = u16::from_be_bytes([o[2], o[3]]);
        let mut forms = vec![
            v4.to_ipv6_mapped(),
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
        ];
        if u32::from(v4) > 1 {
            forms.push(Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo));
        }
        forms
    }

    proptest! {
        #[test]
        fn every_ipv6_form_of_an_ipv4_address_gets_its_verdict(bits in any::<u32>()) {
            let v4 = v4_of(bits);
            let verdict = denied(IpAddr::V4(v4), &[], &[]);
            for v6 in mapped_forms(v4) {
                prop_assert_eq!(denied(IpAddr::V6(v6), &[], &[]), verdict, "{}", v6);
            }
        }

        #[test]
        fn nothing_in_a_fixed_denied_range_passes_whatever_is_allowed(
            low in any::<u32>(),
            which in 0usize..5,
        ) {
            // 127/8, 169.254/16, 224/4, 240/4, 0/8 with random host bits.
            let (base, prefix): (u32, u32) = [
                (0x7f00_0000, 8), (0xa9fe_0000, 16), (0xe000_0000, 4),
                (0xf000_0000, 4), (0, 8),
            ][which];
            let addr = base | (low & (u32::MAX >> prefix));
            let wide = [net("0.0.0.0/0"), net("::/0")];
            prop_assert!(denied(IpAddr::V4(v4_of(addr)), &wide, &[]).is_some());
            for v6 in mapped_forms(v4_of(addr)) {
                prop_assert!(denied(IpAddr::V6(v6), &wide, &[]).is_some(), "{}", v6);
            }
        }

        #[test]
        fn private_addresses_pass_exactly_when_allowed(low in any::<u32>(), which in 0usize..4) {
            let (base, prefix): (u32, u32) = [
                (0x0a00_0000, 8), (0xac10_0000, 12), (0xc0a8_0000, 16), (0x6440_0000, 10),
            ][which];
            let addr = v4_of(base | (low & (u32::MAX >> prefix)));
            if METADATA_V4.contains(&addr) {
                return Ok(());
            }
            prop_assert_eq!(denied(IpAddr::V4(addr), &[], &[]), Some(Denied::Private));
            let own = IpNet::new(IpAddr::V4(v4_of(base)), prefix as u8)
                .unwrap_or_else(|_| net("0.0.0.0/32"));
            prop_assert_eq!(denied(IpAddr::V4(addr), &[own], &[]), None);
            prop_assert_eq!(
                denied(IpAddr::V4(addr), &[own], &[own]),
                Some(Denied::Cluster)
            );
        }

        #[test]
        fn cluster_ranges_always_win(bits in any::<u32>(), prefix in 8u8..=32) {
            let v4 = v4_of(bits);
            let range = IpNet::new(IpAddr::V4(v4), prefix)
                .unwrap_or_else(|_| net("0.0.0.0/32"))
                .trunc();
            let wide = [net("0.0.0.0/0")];
            prop_assert!(denied(IpAddr::V4(v4), &wide, &[range]).is_some());
            prop_assert!(denied(IpAddr::V6(v4.to_ipv6_mapped()), &wide, &[range]).is_some());
        }
    }
}
