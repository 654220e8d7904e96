//! Hand-built IPv4 + TCP SYN packets for a raw socket with `IP_HDRINCL`. Pure.

use std::net::Ipv4Addr;

/// Length of [`syn`]'s packet: a 20-byte IPv4 header and a 20-byte TCP header.
pub const SYN_LEN: usize = 40;

const TCP_SYN: u8 = 0x02;
const IPPROTO_TCP: u8 = 6;

/// A TCP SYN from `src:sport` to `dst:dport` with sequence number `seq`; both checksums set.
pub fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; SYN_LEN] {
    let mut p = [0u8; SYN_LEN];
    // IPv4: version 4, IHL 5, total length, id, DF, TTL 64, TCP.
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(SYN_LEN as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = IPPROTO_TCP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(0, &p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP: ports, sequence number, data offset 5 words, SYN, window.
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = TCP_SYN;
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    let tcp_sum = checksum(pseudo_header_sum(src, dst, 20), &p[20..]);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// Sum of the TCP pseudo header (addresses, protocol, TCP length), not yet folded.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: u16) -> u32 {
    let words = |a: Ipv4Addr| {
        let o = a.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    words(src) + words(dst) + u32::from(IPPROTO_TCP) + u32::from(tcp_len)
}

/// The Internet checksum (RFC 1071) of `data`, starting from a partial sum.
fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let hi = pair[0];
        let lo = pair.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 99, 77, 1);

    #[test]
    fn headers_carry_addresses_ports_and_the_syn_flag() {
        let p = syn(SRC, DST, 40000, 7000, 0xdead_beef);
        assert_eq!(p[0], 0x45);
        assert_eq!(p[9], 6);
        assert_eq!(&p[12..16], &[10, 200, 1, 2]);
        assert_eq!(&p[16..20], &[10, 99, 77, 1]);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 40000);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 7000);
        assert_eq!(
            u32::from_be_bytes([p[24], p[25], p[26], p[27]]),
            0xdead_beef
        );
        assert_eq!(p[33], TCP_SYN);
    }

    #[test]
    fn checksums_verify() {
        for (sport, dport, seq) in [(1, 1, 0), (40000, 7000, 7), (65535, 65535, u32::MAX)] {
            let p = syn(SRC, DST, sport, dport, seq);
            // A correct checksum makes the sum over the covered bytes fold to 0xffff.
            assert_eq!(checksum(0, &p[..20]), 0, "IP header");
            assert_eq!(
                checksum(pseudo_header_sum(SRC, DST, 20), &p[20..]),
                0,
                "TCP"
            );
        }
    }

    #[test]
    fn checksum_of_the_rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (complement 220d).
        assert_eq!(
            checksum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }
}
