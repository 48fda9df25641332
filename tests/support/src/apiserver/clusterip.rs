//! Service cluster IPs: the range the real control plane of `tests/kube`
//! serves (`--service-cluster-ip-range=10.96.0.0/12`), the checks on an
//! address a client asks for, and picking a free one. Which addresses are
//! taken is the caller's to say (the Services in storage): an address is
//! free again once its Service is gone, as with the real allocator.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;

/// The range, as the real server's messages print it.
pub const RANGE: &str = "10.96.0.0/12";
const BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SIZE: u32 = 1 << 20;
/// The real allocator hands out addresses from above its static band (the
/// first min(max(16, size/16), 256) addresses, kept for addresses clients
/// ask for) while it can.
const STATIC_BAND: u32 = 256;
/// The `kubernetes` Service's address on a real server (the range's first
/// usable one). The fake has no such Service, but never hands it out.
pub const KUBERNETES: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// What a dry-run create shows as the allocated address on the real server
/// (its dry-run allocator allocates nothing).
pub const DRY_RUN: &str = "10.96.0.0";

/// Why an address a client asked for cannot be its Service's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the provided network does not match the current range")]
    OtherNetwork,
    #[error("the provided IP ({0}) is not in the valid range. The range of valid IPs is {RANGE}")]
    NotUsable(Ipv4Addr),
    #[error("provided IP is already allocated")]
    Taken,
}

fn in_range(ip: Ipv4Addr) -> bool {
    u32::from(ip).wrapping_sub(BASE) < SIZE
}

/// Whether `ip` may be asked for: in the range, and neither its network nor
/// its broadcast address.
pub fn check(ip: Ipv4Addr) -> Result<(), Refused> {
    if !in_range(ip) {
        return Err(Refused::OtherNetwork);
    }
    let offset = u32::from(ip) - BASE;
    if offset == 0 || offset == SIZE - 1 {
        return Err(Refused::NotUsable(ip));
    }
    Ok(())
}

/// Whether `ip` can be given to a Service now (`taken`: the addresses of the
/// other Services).
pub fn claim(ip: Ipv4Addr, taken: &HashSet<Ipv4Addr>) -> Result<(), Refused> {
    check(ip)?;
    if ip == KUBERNETES || taken.contains(&ip) {
        return Err(Refused::Taken);
    }
    Ok(())
}

/// A free address: at random above the static band, else the first free one
/// anywhere. None when the range is full.
pub fn pick(taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let free = |offset: u32| {
        let ip = Ipv4Addr::from(BASE + offset);
        (ip != KUBERNETES && !taken.contains(&ip)).then_some(ip)
    };
    let mut rng = rand::rng();
    for _ in 0..64 {
        if let Some(ip) = free(rng.random_range(STATIC_BAND..SIZE - 1)) {
            return Some(ip);
        }
    }
    (STATIC_BAND..SIZE - 1).chain(1..STATIC_BAND).find_map(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_asked_for_are_checked_as_the_real_allocator_does() {
        let taken: HashSet<Ipv4Addr> = [ip("10.96.0.10")].into();
        // (address, answer): the real server's words (tests/differential.rs).
        let cases = [
            ("10.96.0.2", Ok(())),
            ("10.111.255.254", Ok(())),
            ("10.100.1.1", Ok(())),
            ("10.0.0.10", Err(Refused::OtherNetwork)),
            ("10.112.0.0", Err(Refused::OtherNetwork)),
            ("192.168.0.1", Err(Refused::OtherNetwork)),
            ("10.96.0.0", Err(Refused::NotUsable(ip("10.96.0.0")))),
            (
                "10.111.255.255",
                Err(Refused::NotUsable(ip("10.111.255.255"))),
            ),
            ("10.96.0.10", Err(Refused::Taken)),
            ("10.96.0.1", Err(Refused::Taken)),
        ];
        for (addr, want) in cases {
            assert_eq!(claim(ip(addr), &taken), want, "{addr}");
        }
        assert_eq!(
            Refused::NotUsable(ip("10.96.0.0")).to_string(),
            "the provided IP (10.96.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
    }

    #[test]
    fn picked_addresses_are_free_usable_and_above_the_static_band() {
        let mut taken = HashSet::new();
        for _ in 0..2000 {
            let got = pick(&taken).unwrap();
            assert_eq!(claim(got, &taken), Ok(()), "{got}");
            assert!(u32::from(got) - BASE >= STATIC_BAND, "{got}");
            taken.insert(got);
        }
        assert_eq!(taken.len(), 2000);
    }

    #[test]
    fn a_nearly_full_range_still_yields_its_last_free_address() {
        let mut taken: HashSet<Ipv4Addr> =
            (1..SIZE - 1).map(|o| Ipv4Addr::from(BASE + o)).collect();
        taken.remove(&ip("10.96.0.7"));
        assert_eq!(pick(&taken), Some(ip("10.96.0.7")));
        taken.insert(ip("10.96.0.7"));
        assert_eq!(pick(&taken), None);
    }
}
