//! Ports a container listens on in its VM, published on the host: what guest-init and the
//! host say to each other for a container that shares the host's network (`--network host`,
//! where a listening socket of the container must be a host port, as under runc).
//!
//! Two vsock channels, besides the control connection:
//! - [`LISTENERS_PORT`] (the host listens): guest-init connects once and sends a
//!   [`Listening`] frame (the control protocol's framing, [`crate::protocol::write_frame`])
//!   whenever the set of TCP sockets in LISTEN state changes; the first frame is the set at
//!   the time of connecting. The host binds the same address and port on its side.
//! - [`FORWARD_PORT`] (guest-init listens): for each connection a host listener accepts, the
//!   host connects here and writes the [`Target`] (encoded in [`TARGET_LEN`] bytes, see
//!   [`Target::encode`]); guest-init connects to that listener inside the guest and copies
//!   bytes both ways until either side closes.
//!
//! Both sides treat what the other sends as hostile: a [`Listening`] frame is bounded by
//! [`MAX_LISTENERS`], a target must name a listener that is in the last set reported.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The host's vsock port guest-init reports its listening sockets to.
pub const LISTENERS_PORT: u32 = 1031;
/// The guest's vsock port the host opens a forwarded connection on.
pub const FORWARD_PORT: u32 = 1032;
/// The most listeners one [`Listening`] frame may carry; a larger set is cut to this many
/// (the lowest ports first) by the guest and refused by the host.
pub const MAX_LISTENERS: usize = 256;
/// The most forwarded connections open at once, on either side; beyond it new ones are
/// closed at once.
pub const MAX_FORWARDED: usize = 512;
/// Bytes of an encoded [`Target`].
pub const TARGET_LEN: usize = 19;

/// One TCP socket in LISTEN state: the address it is bound to (unspecified for all) and its
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The bound address (`0.0.0.0` or `::` for any).
    pub addr: IpAddr,
    /// The port (never 0).
    pub port: u16,
}

/// The TCP listeners of the guest's network namespace, sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    /// The listeners.
    pub tcp: Vec<Target>,
}

impl Listening {
    /// Checks what a receiver relies on: at most [`MAX_LISTENERS`], no port 0.
    pub fn validate(&self) -> Result<(), String> {
        if self.tcp.len() > MAX_LISTENERS {
            return Err(format!(
                "{} listeners (at most {MAX_LISTENERS})",
                self.tcp.len()
            ));
        }
        if self.tcp.iter().any(|t| t.port == 0) {
            return Err("a listener on port 0".into());
        }
        Ok(())
    }
}

impl Target {
    /// The target in [`TARGET_LEN`] bytes: the family (4 or 6), the address in 16 bytes (an
    /// IPv4 address in the first 4, the rest zero), the port big-endian.
    pub fn encode(&self) -> [u8; TARGET_LEN] {
        let mut out = [0u8; TARGET_LEN];
        match self.addr {
            IpAddr::V4(a) => {
                out[0] = 4;
                out[1..5].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out[0] = 6;
                out[1..17].copy_from_slice(&a.octets());
            }
        }
        out[17..].copy_from_slice(&self.port.to_be_bytes());
        out
    }

    /// The target [`Target::encode`] made, or `None` for bytes it cannot have made.
    pub fn decode(bytes: &[u8; TARGET_LEN]) -> Option<Target> {
        let port = u16::from_be_bytes([bytes[17], bytes[18]]);
        if port == 0 {
            return None;
        }
        let addr = match bytes[0] {
            4 if bytes[5..17].iter().all(|&b| b == 0) => {
                IpAddr::V4(Ipv4Addr::new(bytes[1], bytes[2], bytes[3], bytes[4]))
            }
            6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&bytes[1..17]);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => return None,
        };
        Some(Target { addr, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip() {
        for addr in ["0.0.0.0", "127.0.0.1", "::", "::1", "fd00::5"] {
            let t = Target {
                addr: addr.parse().unwrap(),
                port: 8080,
            };
            assert_eq!(Target::decode(&t.encode()), Some(t));
        }
    }

    #[test]
    fn bad_targets_are_refused() {
        let mut b = Target {
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        }
        .encode();
        b[0] = 5;
        assert_eq!(Target::decode(&b), None);
        b[0] = 4;
        b[9] = 1; // bytes past an IPv4 address
        assert_eq!(Target::decode(&b), None);
        let zero_port = Target {
            addr: "::1".parse().unwrap(),
            port: 1,
        }
        .encode();
        let mut z = zero_port;
        z[18] = 0;
        assert_eq!(Target::decode(&z), None);
    }

    #[test]
    fn listening_is_bounded() {
        let many = Listening {
            tcp: (1..=MAX_LISTENERS as u16 + 1)
                .map(|port| Target {
                    addr: "0.0.0.0".parse().unwrap(),
                    port,
                })
                .collect(),
        };
        assert!(many.validate().is_err());
        let zero = Listening {
            tcp: vec![Target {
                addr: "::".parse().unwrap(),
                port: 0,
            }],
        };
        assert!(zero.validate().is_err());
    }
}
