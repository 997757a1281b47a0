//! Every vector of `../shared/spec/compat.md` "Node identity", checked through the public
//! API: the key, the AP and station MACs, their recognition, and the mesh SSID.

use mqttmesh_core::identity::{
    ap_mac, enc, mesh_chip_id, mesh_key, mesh_ssid, station_mac, Mac, NodeId,
};

/// (mesh password, chip ID, AP MAC) straight from the compat.md table.
const VECTORS: &[(&str, u32, &str)] = &[
    ("ESP8266MQTTMesh", 0x000001, "AA:07:9D:00:00:01"),
    ("ESP8266MQTTMesh", 0x00A1B2, "02:C9:F4:00:A1:B2"),
    ("ESP8266MQTTMesh", 0xABCDEF, "E2:51:85:AB:CD:EF"),
    ("ESP8266MQTTMesh", 0xFFFFFF, "0A:E9:50:FF:FF:FF"),
    ("secret", 0x000001, "AA:DE:BE:00:00:01"),
    ("secret", 0x00A1B2, "02:29:1B:00:A1:B2"),
];

#[test]
fn keys_match_compat_table() {
    assert_eq!(mesh_key("ESP8266MQTTMesh"), 0x285D_60F5);
    assert_eq!(mesh_key("secret"), 0x6BC9_9BD5);
}

#[test]
fn ap_macs_match_compat_table() {
    for &(password, chip_id, expected) in VECTORS {
        let key = mesh_key(password);
        let mac = ap_mac(chip_id, key);
        assert_eq!(mac.to_string(), expected, "{password} {chip_id:06X}");
        assert_eq!(Mac::parse(expected), Some(mac));
        let e = enc(chip_id, key);
        assert_eq!(e.to_le_bytes()[..3], mac.0[..3]);
    }
}

#[test]
fn station_mac_is_ap_mac_with_bit_2() {
    for &(password, chip_id, _) in VECTORS {
        let key = mesh_key(password);
        let ap = ap_mac(chip_id, key);
        let sta = station_mac(chip_id, key);
        assert_eq!(sta.0[0], ap.0[0] | 0x04);
        assert_eq!(sta.0[1..], ap.0[1..]);
    }
}

#[test]
fn both_macs_are_recognised_as_mesh_nodes() {
    for &(password, chip_id, expected) in VECTORS {
        let key = mesh_key(password);
        let ap = Mac::parse(expected).expect("vector parses");
        assert_eq!(mesh_chip_id(&ap, key), Some(chip_id), "{expected}");
        assert_eq!(mesh_chip_id(&station_mac(chip_id, key), key), Some(chip_id));
    }
}

#[test]
fn macs_of_another_mesh_are_not_recognised() {
    let ours = mesh_key("ESP8266MQTTMesh");
    for &(password, _, expected) in VECTORS.iter().filter(|v| v.0 == "secret") {
        assert_ne!(mesh_key(password), ours);
        let mac = Mac::parse(expected).expect("vector parses");
        assert_eq!(mesh_chip_id(&mac, ours), None, "{expected}");
    }
    // An ordinary router BSSID.
    let router = Mac::parse("3C:84:6A:12:34:56").expect("parses");
    assert_eq!(mesh_chip_id(&router, ours), None);
}

#[test]
fn node_ids_and_ssids_of_vectors() {
    let key = mesh_key("ESP8266MQTTMesh");
    assert_eq!(NodeId::from_chip_id(0x00A1B2).as_str(), "00A1B2");
    assert_eq!(NodeId::from_chip_id(0xABCDEF).to_string(), "ABCDEF");
    assert_eq!(
        mesh_ssid("esp8266_mqtt_mesh", &ap_mac(0xABCDEF, key)).as_str(),
        "esp8266_mqtt_mesh_abcdef"
    );
}
