//! The `virtio_net_hdr_v1` in front of every frame, and what it may ask for under the features
//! the driver accepted ([`Negotiated`]).
//!
//! - tx (the guest's headers, hostile): [`check_tx`] lets through exactly what was negotiated,
//!   with every offset inside the frame, before the tap sees the frame;
//! - rx (the tap's headers): [`check_rx`] refuses offloads the guest did not accept and clears
//!   the flags it cannot be told about;
//! - the tap itself is told which offloads it may use: [`tap_offloads`], the `GUEST_*`
//!   features (what the tap may hand us is what the guest accepts).

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use super::VNET_HDR_LEN;

/// Where `flags` sits in the header (u8).
pub(super) const FLAGS_OFFSET: usize = 0;
/// Where `gso_type` sits in the header (u8).
pub(super) const GSO_TYPE_OFFSET: usize = 1;
/// Where `num_buffers` sits in the header (le16).
pub(super) const NUM_BUFFERS_OFFSET: usize = 10;

const NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;
const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;

/// What the features the driver accepted allow, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Negotiated {
    /// tx may leave the checksum to the host (`VIRTIO_NET_F_CSUM`).
    pub(super) tx_csum: bool,
    /// tx may hand over TCP/IPv4 frames to segment (`VIRTIO_NET_F_HOST_TSO4`).
    pub(super) tx_tso4: bool,
    /// tx may hand over TCP/IPv6 frames to segment (`VIRTIO_NET_F_HOST_TSO6`).
    pub(super) tx_tso6: bool,
    /// tx segments may carry the ECN bit (`VIRTIO_NET_F_HOST_ECN`).
    pub(super) tx_ecn: bool,
    /// rx may carry partial checksums and "checksum valid" (`VIRTIO_NET_F_GUEST_CSUM`).
    pub(super) rx_csum: bool,
    /// rx may carry unsegmented TCP/IPv4 (`VIRTIO_NET_F_GUEST_TSO4`).
    pub(super) rx_tso4: bool,
    /// rx may carry unsegmented TCP/IPv6 (`VIRTIO_NET_F_GUEST_TSO6`).
    pub(super) rx_tso6: bool,
    /// rx segments may carry the ECN bit (`VIRTIO_NET_F_GUEST_ECN`).
    pub(super) rx_ecn: bool,
    /// An rx frame may span several chains (`VIRTIO_NET_F_MRG_RXBUF`).
    pub(super) mergeable_rx: bool,
    /// Notifications both ways follow the rings' event indexes (`VIRTIO_RING_F_EVENT_IDX`).
    pub(super) event_idx: bool,
    /// Chains may go through an indirect table (`VIRTIO_RING_F_INDIRECT_DESC`).
    pub(super) indirect_desc: bool,
}

impl Negotiated {
    /// What `features` (accepted by the driver) allow.
    pub(super) fn from_features(features: u64) -> Self {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        Negotiated {
            tx_csum: has(VIRTIO_NET_F_CSUM),
            tx_tso4: has(VIRTIO_NET_F_HOST_TSO4),
            tx_tso6: has(VIRTIO_NET_F_HOST_TSO6),
            tx_ecn: has(VIRTIO_NET_F_HOST_ECN),
            rx_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            rx_tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            rx_tso6: has(VIRTIO_NET_F_GUEST_TSO6),
            rx_ecn: has(VIRTIO_NET_F_GUEST_ECN),
            mergeable_rx: has(VIRTIO_NET_F_MRG_RXBUF),
            event_idx: has(VIRTIO_RING_F_EVENT_IDX),
            indirect_desc: has(VIRTIO_RING_F_INDIRECT_DESC),
        }
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Flags other than the ones this direction may carry.
    #[error("flags {0:#x} are not allowed")]
    Flags(u8),
    /// `NEEDS_CSUM` without the checksum feature.
    #[error("checksum offload was not negotiated")]
    CsumNotNegotiated,
    /// The checksum to fill in is not inside the frame.
    #[error("checksum at {start}+{offset} is outside the {len}-byte frame")]
    CsumOutside {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// The frame's length, after the header.
        len: usize,
    },
    /// A `gso_type` that was not negotiated (or is unknown).
    #[error("gso_type {0:#x} was not negotiated")]
    GsoType(u8),
    /// Segmentation without a checksum to fill in.
    #[error("segmentation without NEEDS_CSUM")]
    GsoWithoutCsum,
    /// A segment size of 0, or not smaller than the frame.
    #[error("gso_size {gso_size} for a {len}-byte frame")]
    GsoSize {
        /// `gso_size`.
        gso_size: u16,
        /// The frame's length, after the header.
        len: usize,
    },
    /// The headers' length runs past the frame.
    #[error("hdr_len {hdr_len} is beyond the {len}-byte frame")]
    HdrLen {
        /// `hdr_len`.
        hdr_len: u16,
        /// The frame's length, after the header.
        len: usize,
    },
}

/// Reads the le16 at `offset` of `hdr`.
fn le16(hdr: &[u8; VNET_HDR_LEN], offset: usize) -> u16 {
    let bytes = [
        hdr.get(offset).copied().unwrap_or(0),
        hdr.get(offset + 1).copied().unwrap_or(0),
    ];
    u16::from_le_bytes(bytes)
}

/// Whether `gso_type` names a segmentation the features allow (`tso4`, `tso6`, `ecn`);
/// `VIRTIO_NET_HDR_GSO_NONE` always passes, but not with the ECN bit.
fn gso_allowed(gso_type: u8, tso4: bool, tso6: bool, ecn: bool) -> bool {
    let with_ecn = gso_type & GSO_ECN != 0;
    let allowed = match gso_type & !GSO_ECN {
        GSO_NONE => !with_ecn,
        GSO_TCPV4 => tso4,
        GSO_TCPV6 => tso6,
        _ => false,
    };
    allowed && (!with_ecn || ecn)
}

/// Checks the header of a tx frame (`frame_len` bytes after the header) against what was
/// negotiated, so that the tap gets only frames it can take:
/// - `flags`: only `NEEDS_CSUM`, and only with `VIRTIO_NET_F_CSUM`; the checksum's place
///   (`csum_start + csum_offset + 2`) inside the frame;
/// - `hdr_len` inside the frame (the tap refuses more, whatever the flags);
/// - `gso_type`: none, or TCPv4/TCPv6 with `HOST_TSO4`/`HOST_TSO6` (the ECN bit with
///   `HOST_ECN`), then also `NEEDS_CSUM` and a `gso_size` that is neither 0 nor as large as
///   the frame.
///
/// `gso_size`, `csum_*` and `num_buffers` mean nothing without the offload that uses them and
/// are not looked at then.
pub(super) fn check_tx(
    hdr: &[u8; VNET_HDR_LEN],
    frame_len: usize,
    negotiated: &Negotiated,
) -> Result<(), HeaderError> {
    let flags = hdr[FLAGS_OFFSET];
    let gso_type = hdr[GSO_TYPE_OFFSET];
    let hdr_len = le16(hdr, 2);
    let gso_size = le16(hdr, 4);
    let csum_start = le16(hdr, 6);
    let csum_offset = le16(hdr, 8);

    if flags & !NEEDS_CSUM != 0 {
        return Err(HeaderError::Flags(flags));
    }
    let needs_csum = flags & NEEDS_CSUM != 0;
    if needs_csum {
        if !negotiated.tx_csum {
            return Err(HeaderError::CsumNotNegotiated);
        }
        let end = usize::from(csum_start) + usize::from(csum_offset) + 2;
        if end > frame_len {
            return Err(HeaderError::CsumOutside {
                start: csum_start,
                offset: csum_offset,
                len: frame_len,
            });
        }
    }
    if usize::from(hdr_len) > frame_len {
        return Err(HeaderError::HdrLen {
            hdr_len,
            len: frame_len,
        });
    }
    if !gso_allowed(
        gso_type,
        negotiated.tx_tso4,
        negotiated.tx_tso6,
        negotiated.tx_ecn,
    ) {
        return Err(HeaderError::GsoType(gso_type));
    }
    if gso_type != GSO_NONE {
        if !needs_csum {
            return Err(HeaderError::GsoWithoutCsum);
        }
        if gso_size == 0 || usize::from(gso_size) >= frame_len {
            return Err(HeaderError::GsoSize {
                gso_size,
                len: frame_len,
            });
        }
    }
    Ok(())
}

/// Checks the header of a frame from the tap against what the guest accepted, and fixes what
/// it may: `NEEDS_CSUM` without `GUEST_CSUM`, or a segmentation the guest did not accept,
/// refuse the frame (a tap set up with these features does not send them); `DATA_VALID`
/// without `GUEST_CSUM`, and any other flag, are cleared (the tap sets `DATA_VALID` whatever
/// its offloads). `num_buffers` is the device's to set.
pub(super) fn check_rx(
    hdr: &mut [u8; VNET_HDR_LEN],
    negotiated: &Negotiated,
) -> Result<(), HeaderError> {
    let flags = hdr[FLAGS_OFFSET];
    let gso_type = hdr[GSO_TYPE_OFFSET];
    if flags & NEEDS_CSUM != 0 && !negotiated.rx_csum {
        return Err(HeaderError::CsumNotNegotiated);
    }
    if !gso_allowed(
        gso_type,
        negotiated.rx_tso4,
        negotiated.rx_tso6,
        negotiated.rx_ecn,
    ) {
        return Err(HeaderError::GsoType(gso_type));
    }
    let allowed = if negotiated.rx_csum {
        NEEDS_CSUM | DATA_VALID
    } else {
        0
    };
    hdr[FLAGS_OFFSET] = flags & allowed;
    Ok(())
}

/// Sets `num_buffers` of `hdr`.
pub(super) fn set_num_buffers(hdr: &mut [u8; VNET_HDR_LEN], num_buffers: u16) {
    hdr[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&num_buffers.to_le_bytes());
}

/// The `TUN_F_*` offloads the tap may use for a guest that accepted `negotiated`: a checksum
/// left to fill with `GUEST_CSUM`, then TSO4/TSO6 (and their ECN bit) as accepted. The tap
/// refuses segmentation without checksum offload, and ECN without segmentation: those
/// combinations are never asked for.
pub(super) fn tap_offloads(negotiated: &Negotiated) -> u32 {
    if !negotiated.rx_csum {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if negotiated.rx_tso4 {
        flags |= libc::TUN_F_TSO4;
    }
    if negotiated.rx_tso6 {
        flags |= libc::TUN_F_TSO6;
    }
    if negotiated.rx_ecn && flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
        flags |= libc::TUN_F_TSO_ECN;
    }
    flags
}
