//! The deterministic address plan of the mesh APs (`docs/PROTOCOL.md`, "Addresses on a
//! node's AP"): no DHCP server runs on a node. A node with chip ID `C` serves
//! `10.C1.C2.0/24` on its AP (C1, C2: the middle and low byte of the chip ID) and is
//! `10.C1.C2.1` there; a child joining it takes `10.C1.C2.(2 + own chip ID mod 251)`.

use core::net::Ipv4Addr;

/// A node's own address on its AP.
pub fn ap_gateway(chip_id: u32) -> Ipv4Addr {
    let [_, _, c1, c2] = chip_id.to_be_bytes();
    Ipv4Addr::new(10, c1, c2, 1)
}

/// The address a child with `child_chip` takes on the AP of `parent_chip`.
pub fn child_address(parent_chip: u32, child_chip: u32) -> Ipv4Addr {
    let [_, _, c1, c2] = parent_chip.to_be_bytes();
    // 2..=252: never the gateway (.1), the network (.0) or the broadcast (.255).
    Ipv4Addr::new(10, c1, c2, 2 + (child_chip % 251) as u8)
}
