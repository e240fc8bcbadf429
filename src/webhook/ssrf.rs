//! SSRF guard: which addresses a webhook may reach, checked when a URL is set and again at
//! every connection (a DNS resolver that drops forbidden addresses, so a name that is
//! re-pointed at an internal address after it was checked still cannot be reached).
//!
//! The policy is the IANA IPv4 and IPv6 Special-Purpose Address Registries: every entry
//! that is not globally reachable is refused (with the registry's globally reachable
//! exceptions inside refused blocks let through), plus multicast, the deprecated 6to4
//! relay anycast (192.88.99.0/24) and IPv6 site-local (fec0::/10). IPv6 transition forms
//! that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4,
//! Teredo) are judged by the IPv4 address inside, so `[::127.0.0.1]` is as loopback as
//! `127.0.0.1`; the local-use NAT64 prefix `64:ff9b:1::/48` is refused whole (its IPv4
//! address may sit at any of RFC 6052's positions, and it is not globally reachable).
//!
//! IP-literal URLs never reach a resolver, so [`Guard::check_url_host`] checks them before
//! each request too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// Why an address is not public: its kind (`"a loopback"`, …) and, for an IPv6 address
/// that carries an IPv4 address, the form and the IPv4 address that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub kind: &'static str,
    pub via: Option<(&'static str, Ipv4Addr)>,
}

impl Forbidden {
    const fn is(kind: &'static str) -> Forbidden {
        Forbidden { kind, via: None }
    }
}

/// Reads as the middle of "`<ip>` is … address": `a loopback`, or `an IPv4-compatible
/// address embedding 127.0.0.1, a loopback`.
impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            None => f.write_str(self.kind),
            Some((form, v4)) => write!(f, "{form} address embedding {v4}, {}", self.kind),
        }
    }
}

/// Why a URL or address is refused. The text is shown to the user (HTTP 400).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("not a valid URL: {0}")]
    BadUrl(String),
    #[error("only http and https URLs are allowed, not {0}:")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("{0} is {1} address; webhooks may only reach public addresses")]
    Address(IpAddr, Forbidden),
    #[error("{0} is a local name; webhooks may only reach public addresses")]
    LocalName(String),
    #[error("{host} resolves to {ip}, {kind} address; webhooks may only reach public addresses")]
    Resolves {
        host: String,
        ip: IpAddr,
        kind: Forbidden,
    },
    #[error("{0} does not resolve: {1}")]
    Unresolvable(String, String),
}

/// The address policy: public addresses, plus the operator's allow-list.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow: Vec<IpNet>) -> Guard {
        Guard { allow }
    }

    /// `Ok` when `ip` may be reached: public, or inside an allowed network (an
    /// IPv4-mapped address also when its IPv4 address is).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allow
            .iter()
            .any(|n| n.contains(&ip) || mapped.is_some_and(|m| n.contains(&m)))
        {
            return Ok(());
        }
        match forbidden_kind(ip) {
            Some(kind) => Err(kind),
            None => Ok(()),
        }
    }
    /// Checks a URL without DNS: scheme, host present, and an IP-literal host or a
    /// `localhost` name. Returns the parsed URL and its host when it is a name.
    pub fn check_url_host(&self, raw: &str) -> Result<(reqwest::Url, Option<String>), Refused> {
        let url = reqwest::Url::parse(raw).map_err(|e| Refused::BadUrl(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Refused::Scheme(url.scheme().to_string()));
        }
        let host = url.host_str().ok_or(Refused::NoHost)?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.check_ip(ip).map_err(|k| Refused::Address(ip, k))?;
            return Ok((url, None));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        // RFC 6761: `*.localhost` is loopback whatever DNS says.
        if (name.ends_with(".localhost") || host.ends_with('.') && name == "localhost")
            && !self.allows_loopback()
        {
            return Err(Refused::LocalName(host.to_string()));
        }
        let host = host.to_string();
        Ok((url, Some(host)))
    }

    /// The full check done when a URL is set: [`Self::check_url_host`], then every address
    /// the name resolves to must be allowed.
    pub async fn check_url(&self, raw: &str) -> Result<reqwest::Url, Refused> {
        let (url, name) = self.check_url_host(raw)?;
        let Some(host) = name else { return Ok(url) };
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| Refused::Unresolvable(host.clone(), "DNS timed out".into()))?
        .map_err(|e| Refused::Unresolvable(host.clone(), e.to_string()))?
        .collect::<Vec<SocketAddr>>();
        for a in addrs {
            if let Err(kind) = self.check_ip(a.ip()) {
                return Err(Refused::Resolves {
                    host,
                    ip: a.ip(),
                    kind,
                });
            }
        }
        Ok(url)
    }

    fn allows_loopback(&self) -> bool {
        self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok()
    }
}

/// What kind of non-public address `ip` is, or `None` if it is globally reachable.
pub fn forbidden_kind(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// Globally reachable entries of the IPv4 registry that lie inside refused blocks.
const V4_GLOBAL: &[(u32, u8)] = &[
    (v4(192, 0, 0, 9), 32),  // Port Control Protocol anycast (RFC 7723)
    (v4(192, 0, 0, 10), 32), // TURN anycast (RFC 8155)
];

/// Refused IPv4 blocks, the first match names the kind (most specific first).
const V4_REFUSED: &[(u32, u8, &str)] = &[
    (v4(169, 254, 169, 254), 32, "a cloud metadata"),
    (v4(0, 0, 0, 0), 8, "an unspecified (0.0.0.0/8)"),
    (v4(10, 0, 0, 0), 8, "a private"),
    (v4(100, 64, 0, 0), 10, "a carrier-grade NAT (100.64.0.0/10)"),
    (v4(127, 0, 0, 0), 8, "a loopback"),
    (v4(169, 254, 0, 0), 16, "a link-local"),
    (v4(172, 16, 0, 0), 12, "a private"),
    // Service continuity (/29), dummy (.8), NAT64 discovery (.170, .171) and the rest.
    (
        v4(192, 0, 0, 0),
        24,
        "an IETF protocol assignment (192.0.0.0/24)",
    ),
    (v4(192, 0, 2, 0), 24, "a documentation (192.0.2.0/24)"),
    (
        v4(192, 88, 99, 0),
        24,
        "a deprecated 6to4 relay anycast (192.88.99.0/24)",
    ),
    (v4(192, 168, 0, 0), 16, "a private"),
    (v4(198, 18, 0, 0), 15, "a benchmarking (198.18.0.0/15)"),
    (v4(198, 51, 100, 0), 24, "a documentation (198.51.100.0/24)"),
    (v4(203, 0, 113, 0), 24, "a documentation (203.0.113.0/24)"),
    (v4(224, 0, 0, 0), 4, "a multicast"),
    (v4(255, 255, 255, 255), 32, "a broadcast"),
    (v4(240, 0, 0, 0), 4, "a reserved (240.0.0.0/4)"),
];

fn in_v4(ip: u32, (net, len): (u32, u8)) -> bool {
    len == 0 || (ip ^ net) >> (32 - u32::from(len)) == 0
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let ip = u32::from(ip);
    if V4_GLOBAL.iter().any(|&n| in_v4(ip, n)) {
        return None;
    }
    V4_REFUSED
        .iter()
        .find(|&&(net, len, _)| in_v4(ip, (net, len)))
        .map(|&(_, _, kind)| Forbidden::is(kind))
}

/// Globally reachable entries of the IPv6 registry inside the refused `2001::/23`.
const V6_GLOBAL: &[(u128, u8)] = &[
    (0x2001_0001_0000_0000_0000_0000_0000_0001, 128), // PCP anycast (RFC 7723)
    (0x2001_0001_0000_0000_0000_0000_0000_0002, 128), // TURN anycast (RFC 8155)
    (0x2001_0001_0000_0000_0000_0000_0000_0003, 128), // DNS-SD SRP anycast (RFC 9665)
    (0x2001_0003_0000_0000_0000_0000_0000_0000, 32),  // AMT (RFC 7450)
    (0x2001_0004_0112_0000_0000_0000_0000_0000, 48),  // AS112-v6 (RFC 7535)
    (0x2001_0020_0000_0000_0000_0000_0000_0000, 28),  // ORCHIDv2 (RFC 7343)
    (0x2001_0030_0000_0000_0000_0000_0000_0000, 28),  // Drone Remote ID (RFC 9374)
];

/// Refused IPv6 blocks (after the transition forms are decoded), first match wins.
const V6_REFUSED: &[(u128, u8, &str)] = &[
    (
        0xfd00_0ec2_0000_0000_0000_0000_0000_0254,
        128,
        "a cloud metadata",
    ),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        "a local-use NAT64 (64:ff9b:1::/48)",
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "a discard-only (100::/64)",
    ),
    (
        0x0100_0000_0000_0001_0000_0000_0000_0000,
        64,
        "a dummy (100:0:0:1::/64)",
    ),
    // Benchmarking 2001:2::/48, ORCHID 2001:10::/28 and the rest of the block.
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        "an IETF protocol assignment (2001::/23)",
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "a documentation (2001:db8::/32)",
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        "a documentation (3fff::/20)",
    ),
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        "an SRv6 SID (5f00::/16)",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "a private (unique local)",
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        "a link-local",
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        "a site-local (deprecated, fec0::/10)",
    ),
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "a multicast"),
];

fn in_v6(ip: u128, (net, len): (u128, u8)) -> bool {
    len == 0 || (ip ^ net) >> (128 - u32::from(len)) == 0
}

/// The IPv4 address an IPv6 transition form carries, with the form's name.
fn embedded_v4(ip: u128) -> Option<(&'static str, Ipv4Addr)> {
    let low = Ipv4Addr::from(ip as u32);
    if in_v6(ip, (0xffff_0000_0000, 96)) {
        Some(("an IPv4-mapped", low))
    } else if in_v6(ip, (0, 96)) {
        // `::` and `::1` are matched before; RFC 4291 deprecated the rest.
        Some(("an IPv4-compatible", low))
    } else if in_v6(ip, (0x0064_ff9b << 96, 96)) {
        Some(("a NAT64", low))
    } else if in_v6(ip, (0x2002 << 112, 16)) {
        Some(("a 6to4", Ipv4Addr::from((ip >> 80) as u32)))
    } else if in_v6(ip, (0x2001 << 112, 32)) {
        // Teredo (RFC 4380): the client's address is the last 32 bits, inverted.
        Some(("a Teredo", Ipv4Addr::from(!(ip as u32))))
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    if ip.is_unspecified() {
        return Some(Forbidden::is("an unspecified"));
    }
    if ip.is_loopback() {
        return Some(Forbidden::is("a loopback"));
    }
    let bits = u128::from(ip);
    if V6_GLOBAL.iter().any(|&n| in_v6(bits, n)) {
        return None;
    }
    if let Some((form, v4)) = embedded_v4(bits) {
        return forbidden_v4(v4).map(|f| Forbidden {
            kind: f.kind,
            via: Some((form, v4)),
        });
    }
    V6_REFUSED
        .iter()
        .find(|&&(net, len, _)| in_v6(bits, (net, len)))
        .map(|&(_, _, kind)| Forbidden::is(kind))
}

/// reqwest DNS resolver that resolves with the system resolver and drops every address
/// the guard refuses; a name left with none fails the connection.
pub struct GuardedResolver {
    pub guard: Arc<Guard>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match guard.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(kind) => {
                        refused = Some(Refused::Resolves {
                            host: host.clone(),
                            ip: a.ip(),
                            kind,
                        });
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(r) => Box::new(r),
                    None => format!("{host} has no addresses").into(),
                };
                return Err(e);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<&'static str> {
        forbidden_kind(s.parse().unwrap()).map(|f| f.kind)
    }

    /// The IANA special-purpose registries (IPv4 and IPv6), entry by entry, plus multicast,
    /// site-local and the transition forms: `(block, inside, just outside)`; an address
    /// inside is refused, the one just outside (where there is one) reaches the internet.
    const REFUSED: &[(&str, &str, Option<&str>)] = &[
        ("0.0.0.0/8", "0.0.0.0", Some("1.0.0.0")),
        ("0.0.0.0/8", "0.255.255.255", None),
        ("10.0.0.0/8", "10.255.0.1", Some("11.0.0.0")),
        ("100.64.0.0/10", "100.64.0.1", Some("100.63.255.255")),
        ("100.64.0.0/10", "100.127.255.255", Some("100.128.0.0")),
        ("127.0.0.0/8", "127.1.2.3", Some("128.0.0.1")),
        ("169.254.0.0/16", "169.254.1.1", Some("169.255.0.1")),
        ("169.254.169.254/32", "169.254.169.254", None),
        ("172.16.0.0/12", "172.31.255.255", Some("172.32.0.0")),
        ("172.16.0.0/12", "172.16.0.0", Some("172.15.255.255")),
        ("192.0.0.0/24", "192.0.0.1", Some("192.0.1.0")),
        ("192.0.0.0/29", "192.0.0.7", None),
        ("192.0.0.8/32", "192.0.0.8", None),
        ("192.0.0.170/32", "192.0.0.170", None),
        ("192.0.0.171/32", "192.0.0.171", None),
        ("192.0.2.0/24", "192.0.2.55", Some("192.0.3.0")),
        ("192.88.99.0/24", "192.88.99.1", Some("192.88.100.0")),
        ("192.168.0.0/16", "192.168.1.1", Some("192.169.0.0")),
        ("198.18.0.0/15", "198.19.255.255", Some("198.20.0.0")),
        ("198.18.0.0/15", "198.18.0.1", Some("198.17.255.255")),
        ("198.51.100.0/24", "198.51.100.7", Some("198.51.101.0")),
        ("203.0.113.0/24", "203.0.113.9", Some("203.0.114.0")),
        ("224.0.0.0/4", "239.255.255.255", Some("223.255.255.255")),
        ("240.0.0.0/4", "240.0.0.1", None),
        ("255.255.255.255/32", "255.255.255.255", None),
        ("::/128", "::", None),
        ("::1/128", "::1", None),
        ("::ffff:0:0/96", "::ffff:127.0.0.1", None),
        ("::ffff:0:0/96", "::ffff:10.1.2.3", None),
        ("::/96 (IPv4-compatible)", "::127.0.0.1", None),
        ("::/96 (IPv4-compatible)", "::10.0.0.1", None),
        ("64:ff9b::/96", "64:ff9b::7f00:1", Some("64:ff9b::808:808")),
        ("64:ff9b::/96", "64:ff9b::a00:1", None),
        ("64:ff9b:1::/48", "64:ff9b:1::7f00:1", None),
        ("64:ff9b:1::/48", "64:ff9b:1::808:808", None),
        ("100::/64", "100::1", None),
        ("100:0:0:1::/64", "100:0:0:1::1", None),
        ("2001::/23", "2001:2::1", Some("2001:200::1")),
        ("2001::/23", "2001:10::1", None),
        ("2001::/23", "2001:1::4", None),
        ("2001::/23", "2001:1ff::1", None),
        (
            "2001::/32 (Teredo)",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            Some("2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
        ),
        (
            "2001::/32 (Teredo)",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
            None,
        ),
        ("2001:db8::/32", "2001:db8::1", Some("2001:db9::1")),
        (
            "2002::/16 (6to4)",
            "2002:7f00:1::1",
            Some("2002:808:808::1"),
        ),
        ("2002::/16 (6to4)", "2002:c0a8:101::1", None),
        ("3fff::/20", "3fff:fff::1", Some("3fff:1000::1")),
        ("5f00::/16", "5f00::1", None),
        ("fc00::/7", "fc00::1", None),
        ("fc00::/7", "fdff::1", None),
        ("fd00:ec2::254/128", "fd00:ec2::254", None),
        ("fe80::/10", "fe80::1", None),
        ("fe80::/10", "febf::1", None),
        ("fec0::/10", "fec0::1", None),
        ("fec0::/10", "feff::1", None),
        ("ff00::/8", "ff02::1", None),
    ];

    /// Globally reachable entries inside refused blocks, and other registry entries that
    /// are globally reachable.
    const GLOBAL: &[&str] = &[
        "192.0.0.9",
        "192.0.0.10",
        "192.31.196.1",
        "192.52.193.1",
        "192.175.48.1",
        "2001:1::1",
        "2001:1::2",
        "2001:1::3",
        "2001:3::1",
        "2001:4:112::1",
        "2001:20::1",
        "2001:2f::1",
        "2001:30::1",
        "2001:3f::1",
        "2620:4f:8000::1",
        "64:ff9b::808:808",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "93.184.216.34",
        "2606:4700::1111",
    ];

    #[test]
    fn every_registry_block_is_refused_and_its_neighbours_are_not() {
        for &(block, inside, outside) in REFUSED {
            assert!(kind(inside).is_some(), "{inside} ({block}) must be refused");
            if let Some(out) = outside {
                assert_eq!(
                    kind(out),
                    None,
                    "{out} (just outside {block}) must be allowed"
                );
            }
        }
        for &ip in GLOBAL {
            assert_eq!(kind(ip), None, "{ip} is globally reachable");
        }
    }

    #[test]
    fn kinds_and_embedded_addresses_are_named() {
        assert_eq!(kind("169.254.169.254"), Some("a cloud metadata"));
        assert_eq!(kind("fd00:ec2::254"), Some("a cloud metadata"));
        assert_eq!(kind("127.0.0.1"), Some("a loopback"));
        assert_eq!(kind("10.0.0.1"), Some("a private"));
        assert_eq!(kind("169.254.1.1"), Some("a link-local"));
        assert!(kind("100.64.0.1").unwrap().contains("carrier-grade"));
        assert!(kind("198.18.0.1").unwrap().contains("benchmarking"));
        assert!(kind("192.0.0.170").unwrap().contains("IETF protocol"));
        assert!(kind("fec0::1").unwrap().contains("site-local"));
        assert_eq!(kind("::1"), Some("a loopback"));
        assert_eq!(kind("::"), Some("an unspecified"));
        assert_eq!(kind("ff02::1"), Some("a multicast"));
        let f = |s: &str| forbidden_kind(s.parse().unwrap()).unwrap().to_string();
        assert_eq!(
            f("::127.0.0.1"),
            "an IPv4-compatible address embedding 127.0.0.1, a loopback"
        );
        assert_eq!(
            f("::ffff:10.1.2.3"),
            "an IPv4-mapped address embedding 10.1.2.3, a private"
        );
        assert_eq!(
            f("64:ff9b::a00:1"),
            "a NAT64 address embedding 10.0.0.1, a private"
        );
        assert_eq!(
            f("2002:7f00:1::1"),
            "a 6to4 address embedding 127.0.0.1, a loopback"
        );
        assert_eq!(
            f("2001:0:4136:e378:8000:63bf:80ff:fffe"),
            "a Teredo address embedding 127.0.0.1, a loopback"
        );
        assert!(f("64:ff9b:1::7f00:1").contains("local-use NAT64"));
    }

    #[test]
    fn allow_list_opens_networks_and_urls_are_checked() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(g.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check_ip("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check_ip("10.0.0.1".parse().unwrap()).is_err());
        assert!(g.check_ip("::127.0.0.1".parse().unwrap()).is_err());
        let strict = Guard::default();
        assert!(matches!(
            strict.check_url_host("ftp://example.com/"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            strict.check_url_host("http://[::1]:8080/"),
            Err(Refused::Address(
                _,
                Forbidden {
                    kind: "a loopback",
                    via: None
                }
            ))
        ));
        for url in [
            "http://[::127.0.0.1]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[2002:7f00:1::1]/",
            "http://[fec0::1]/",
            "http://198.18.0.1/",
            "http://192.0.0.170/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(
                matches!(strict.check_url_host(url), Err(Refused::Address(..))),
                "{url} must be refused"
            );
        }
        assert!(matches!(
            strict.check_url_host("http://a.localhost/"),
            Err(Refused::LocalName(_))
        ));
        assert!(matches!(
            strict.check_url_host("not a url"),
            Err(Refused::BadUrl(_))
        ));
        assert!(strict.check_url_host("https://example.com/hook").is_ok());
        assert!(strict.check_url_host("http://192.0.0.9/").is_ok());
    }
}
