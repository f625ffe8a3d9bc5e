//! The operator's `--connection-target-allow` list: what a `host` target
//! of connectionExhaustion may resolve to. Anyone who may create a
//! ChaosExperiment would otherwise make the operator open connections to
//! any address it can reach.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::reasons::{Refusal, RefuseReason};

/// One `--connection-target-allow` entry: `CIDR:PORT` (`10.0.0.0/8:5432`,
/// `[fd00::]/8:5432`, a bare address meaning a /32 or /128) or
/// `HOST:PORT` (`db.internal:5432`, allowing whatever that name resolves to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    Net { addr: IpAddr, prefix: u8, port: u16 },
    Host { name: String, port: u16 },
}

impl FromStr for AllowEntry {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (what, port) = s.rsplit_once(':').ok_or_else(|| {
            format!("--connection-target-allow {s:?}: write CIDR:PORT or HOST:PORT, e.g. 10.0.0.0/8:5432 or db.internal:5432")
        })?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            format!("--connection-target-allow {s:?}: the port must be 1 to 65535")
        })?;
        let what = what.trim_start_matches('[').replace("]", "");
        let (addr, prefix) = match what.split_once('/') {
            Some((a, p)) => (a.to_owned(), Some(p)),
            None => (what.clone(), None),
        };
        match addr.parse::<IpAddr>() {
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    None => max,
                    Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                        format!(
                            "--connection-target-allow {s:?}: the prefix length must be 0 to {max}"
                        )
                    })?,
                };
                Ok(AllowEntry::Net {
                    addr: ip,
                    prefix,
                    port,
                })
            }
            Err(_) if prefix.is_none() && valid_host_name(&addr) => Ok(AllowEntry::Host {
                name: addr.to_ascii_lowercase(),
                port,
            }),
            Err(_) => Err(format!(
                "--connection-target-allow {s:?}: {addr:?} is neither an IP address, a CIDR nor a host name"
            )),
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net {
                addr: IpAddr::V6(a),
                prefix,
                port,
            } => write!(f, "[{a}]/{prefix}:{port}"),
            AllowEntry::Net { addr, prefix, port } => write!(f, "{addr}/{prefix}:{port}"),
            AllowEntry::Host { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

fn valid_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `ip` within `net/prefix` (same family only).
fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The operator's allow-list for `host` targets. Empty: every host target
/// is refused (Service targets are governed by the namespace opt-in).
#[derive(Clone, Debug, Default)]
pub struct AllowList(pub Vec<AllowEntry>);

impl AllowList {
    /// The host names the entries mention, to be resolved by the caller.
    pub fn host_names(&self) -> impl Iterator<Item = (&str, u16)> {
        self.0.iter().filter_map(|e| match e {
            AllowEntry::Host { name, port } => Some((name.as_str(), *port)),
            AllowEntry::Net { .. } => None,
        })
    }

    /// Which of `resolved` no entry covers. `host_addrs` holds what each
    /// `HOST:PORT` entry resolved to (its port included). Pure: the
    /// caller resolves, so the decision is testable and the addresses it
    /// approved are the ones connected to.
    pub fn uncovered(&self, resolved: &[SocketAddr], host_addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        resolved
            .iter()
            .filter(|a| {
                let by_net = self.0.iter().any(|e| match e {
                    AllowEntry::Net { addr, prefix, port } => {
                        *port == a.port() && in_net(a.ip(), *addr, *prefix)
                    }
                    AllowEntry::Host { .. } => false,
                });
                !by_net && !host_addrs.contains(a)
            })
            .copied()
            .collect()
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            "is empty".to_owned()
        } else {
            format!(
                "is {}",
                self.0
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    }
}

/// The field of connectionExhaustion's `host` target.
pub const HOST_FIELD: &str = "spec.action.connectionExhaustion.target.host";

/// Resolve a `host` target and keep it only if the allow-list covers every
/// address it resolves to. The addresses returned are the only ones the
/// run connects to, so a name that later resolves elsewhere changes
/// nothing. The refusal names the field and the fix.
pub async fn allowed_addresses(
    allow: &AllowList,
    field: &str,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Refusal> {
    let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(Refusal::new(
                RefuseReason::TargetNotAllowed,
                format!(
                    "{field}: {host} cannot be resolved ({e}), so the allow-list cannot be checked"
                ),
            ));
        }
    };
    if resolved.is_empty() {
        return Err(Refusal::new(
            RefuseReason::TargetNotAllowed,
            format!("{field}: {host} resolves to no address"),
        ));
    }
    let mut host_addrs = Vec::new();
    for (name, p) in allow.host_names() {
        // An entry that does not resolve allows nothing; the others still do.
        if let Ok(a) = tokio::net::lookup_host((name, p)).await {
            host_addrs.extend(a);
        }
    }
    let uncovered = allow.uncovered(&resolved, &host_addrs);
    if uncovered.is_empty() {
        return Ok(resolved);
    }
    Err(Refusal::new(
        RefuseReason::TargetNotAllowed,
        format!(
            "{field}: {host}:{port} (resolved to {}) is not covered by the operator's --connection-target-allow, which {}; the operator's administrator adds the address and port (e.g. --connection-target-allow {}/{}:{port}), or use a Service in an opted-in namespace",
            uncovered
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            allow.describe(),
            uncovered[0].ip(),
            if uncovered[0].is_ipv4() { 32 } else { 128 },
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse_or_name_the_flag() {
        let ok = [
            ("10.0.0.0/8:5432", "10.0.0.0/8:5432"),
            ("127.0.0.1:5432", "127.0.0.1/32:5432"),
            ("db.internal:5432", "db.internal:5432"),
            ("DB.Internal:5432", "db.internal:5432"),
            ("[fd00::]/8:5432", "[fd00::]/8:5432"),
            ("[::1]:5432", "[::1]/128:5432"),
        ];
        for (s, shown) in ok {
            let e: AllowEntry = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(e.to_string(), shown);
        }
        for bad in [
            "10.0.0.0/8",
            "10.0.0.0/33:5432",
            "db:0",
            "db:70000",
            "bad_name!:5432",
            "db.internal/8:5432",
        ] {
            let e = bad.parse::<AllowEntry>().expect_err(bad);
            assert!(e.contains("--connection-target-allow"), "{e}");
        }
    }

    #[test]
    fn every_resolved_address_must_be_covered_with_its_port() {
        let list = AllowList(
            ["10.0.0.0/8:5432", "127.0.0.1:6000", "db.internal:5432"]
                .iter()
                .map(|s| s.parse().expect("entry"))
                .collect(),
        );
        let a = |s: &str| -> SocketAddr { s.parse().expect("addr") };
        // What db.internal:5432 resolved to.
        let host_addrs = [a("192.168.1.7:5432")];
        let cases: [(&[SocketAddr], Vec<SocketAddr>); 7] = [
            (&[a("10.1.2.3:5432")], vec![]),
            (&[a("10.1.2.3:5433")], vec![a("10.1.2.3:5433")]),
            (&[a("11.0.0.1:5432")], vec![a("11.0.0.1:5432")]),
            (&[a("127.0.0.1:6000")], vec![]),
            (&[a("127.0.0.2:6000")], vec![a("127.0.0.2:6000")]),
            (&[a("192.168.1.7:5432")], vec![]),
            // One address outside is enough to refuse.
            (
                &[a("10.1.2.3:5432"), a("8.8.8.8:5432")],
                vec![a("8.8.8.8:5432")],
            ),
        ];
        for (resolved, want) in cases {
            assert_eq!(list.uncovered(resolved, &host_addrs), want, "{resolved:?}");
        }
        assert_eq!(
            AllowList::default().uncovered(&[a("127.0.0.1:5432")], &[]),
            vec![a("127.0.0.1:5432")]
        );
        let zero: AllowList = AllowList(vec!["0.0.0.0/0:5432".parse().expect("entry")]);
        assert!(zero.uncovered(&[a("1.2.3.4:5432")], &[]).is_empty());
        assert!(!zero.uncovered(&[a("[::1]:5432")], &[]).is_empty());
    }
}
