//! SSRF guard: which addresses a webhook may reach, checked when a URL is set and again at
//! every connection (a DNS resolver that drops forbidden addresses, so a name that is
//! re-pointed at an internal address after it was checked still cannot be reached).
//!
//! IP-literal URLs never reach a resolver, so [`Guard::check_url_host`] checks them before
//! each request too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

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
    Address(IpAddr, &'static str),
    #[error("{0} is a local name; webhooks may only reach public addresses")]
    LocalName(String),
    #[error("{host} resolves to {ip}, {kind} address; webhooks may only reach public addresses")]
    Resolves {
        host: String,
        ip: IpAddr,
        kind: &'static str,
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

    /// `Ok` when `ip` may be reached: public, or inside an allowed network.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|n| n.contains(&ip)) {
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

/// What kind of non-public address `ip` is (`"a loopback"`, …), or `None` if public.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("a cloud metadata")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_private() {
        Some("a private")
    } else if ip.is_link_local() {
        Some("a link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a carrier-grade NAT (100.64.0.0/10)")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else if o[0] == 0 {
        Some("an unspecified (0.0.0.0/8)")
    } else if ip.is_broadcast() || o[0] >= 240 {
        Some("a reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("a cloud metadata")
    } else if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_unspecified() {
        Some("an unspecified")
    } else if let Some(v4) = ip.to_ipv4_mapped() {
        forbidden_v4(v4)
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: the embedded IPv4 address decides.
        forbidden_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32))
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("a private (unique local)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("a link-local")
    } else if ip.is_multicast() {
        Some("a multicast")
    } else {
        None
    }
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
        forbidden_kind(s.parse().unwrap())
    }

    #[test]
    fn classifies_addresses() {
        assert_eq!(kind("169.254.169.254"), Some("a cloud metadata"));
        assert_eq!(kind("fd00:ec2::254"), Some("a cloud metadata"));
        assert_eq!(kind("127.0.0.1"), Some("a loopback"));
        assert_eq!(kind("10.0.0.1"), Some("a private"));
        assert_eq!(kind("172.16.5.4"), Some("a private"));
        assert_eq!(kind("192.168.1.1"), Some("a private"));
        assert_eq!(kind("169.254.1.1"), Some("a link-local"));
        assert!(kind("100.64.0.1").unwrap().contains("carrier-grade"));
        assert_eq!(kind("100.128.0.1"), None);
        assert_eq!(kind("224.0.0.1"), Some("a multicast"));
        assert!(kind("0.0.0.0").is_some());
        assert_eq!(kind("::1"), Some("a loopback"));
        assert_eq!(kind("::"), Some("an unspecified"));
        assert_eq!(kind("::ffff:10.1.2.3"), Some("a private"));
        assert_eq!(kind("64:ff9b::a00:1"), Some("a private"));
        assert!(kind("fc00::1").is_some());
        assert_eq!(kind("fe80::1"), Some("a link-local"));
        assert_eq!(kind("ff02::1"), Some("a multicast"));
        assert_eq!(kind("93.184.216.34"), None);
        assert_eq!(kind("2606:4700::1111"), None);
    }

    #[test]
    fn allow_list_opens_networks_and_urls_are_checked() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(g.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check_ip("10.0.0.1".parse().unwrap()).is_err());
        let strict = Guard::default();
        assert!(matches!(
            strict.check_url_host("ftp://example.com/"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            strict.check_url_host("http://[::1]:8080/"),
            Err(Refused::Address(_, "a loopback"))
        ));
        assert!(matches!(
            strict.check_url_host("http://a.localhost/"),
            Err(Refused::LocalName(_))
        ));
        assert!(matches!(
            strict.check_url_host("not a url"),
            Err(Refused::BadUrl(_))
        ));
        assert!(strict.check_url_host("https://example.com/hook").is_ok());
    }
}
