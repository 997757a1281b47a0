//! Config defaults (`../shared/spec/compat.md` "Defaults") and one failing case per
//! validation rule, each checked for the field it names.

use mqttmesh_core::config::{
    BrokerTls, Builder, Config, ConfigError, Field, Timing, DEFAULT_BROKER_HOST,
    DEFAULT_FIRMWARE_ID, DEFAULT_FIRMWARE_VERSION, DEFAULT_MAX_DEPTH, MAX_NETWORKS,
};
use mqttmesh_core::{Duration, Mac, NodeId};

fn base() -> Builder {
    Config::builder().network("home", "correct horse")
}

/// The field `b` fails on.
fn field_of(b: Builder) -> Field {
    match b.build() {
        Ok(c) => panic!("expected an error, built {c:?}"),
        Err(e) => e.field,
    }
}

fn bssid() -> Mac {
    Mac([0x3C, 0x84, 0x6A, 0x12, 0x34, 0x56])
}

#[test]
fn defaults_build_with_one_network_and_match_compat() {
    let c = base().build().expect("defaults are valid");
    assert_eq!(c.firmware_id, DEFAULT_FIRMWARE_ID);
    assert_eq!(c.firmware_version.as_str(), DEFAULT_FIRMWARE_VERSION);
    assert_eq!(c.networks.len(), 1);
    assert_eq!(c.networks[0].ssid.as_str(), "home");
    assert_eq!(c.networks[0].password.as_str(), "correct horse");
    assert_eq!(c.networks[0].bssid, None);
    assert!(!c.networks[0].hidden);
    assert_eq!(c.in_prefix.as_str(), "esp8266-in/");
    assert_eq!(c.out_prefix.as_str(), "esp8266-out/");
    assert_eq!(c.broker_host.as_str(), DEFAULT_BROKER_HOST);
    assert_eq!(c.broker_port, 1883);
    assert_eq!(c.mqtt_tls, BrokerTls::Off);
    assert_eq!(c.mqtt_username, None);
    assert_eq!(c.mqtt_password, None);
    assert_eq!(c.mesh_port, 1884);
    assert_eq!(c.mesh_ssid_base.as_str(), "esp8266_mqtt_mesh");
    assert_eq!(c.mesh_password.as_str(), "ESP8266MQTTMesh");
    assert_eq!(c.max_children, 4);
    assert_eq!(c.max_depth, DEFAULT_MAX_DEPTH);
    assert_eq!(c.node_id, None);
    assert_eq!(c.timing, Timing::default());
}

#[test]
fn tls_moves_the_default_port_but_not_an_explicit_one() {
    let c = base().mqtt_tls(BrokerTls::Ca).build().unwrap();
    assert_eq!(c.broker_port, 8883);
    let c = base()
        .broker("broker.lan", 18883)
        .mqtt_tls(BrokerTls::Ca)
        .build()
        .unwrap();
    assert_eq!(
        (c.broker_host.as_str(), c.broker_port),
        ("broker.lan", 18883)
    );
    let c = base()
        .mqtt_tls(BrokerTls::Ca)
        .broker_host("broker.lan")
        .build()
        .unwrap();
    assert_eq!(c.broker_port, 8883);
    let c = base().broker("a", 1999).broker_host("b").build().unwrap();
    assert_eq!((c.broker_host.as_str(), c.broker_port), ("b", 1999));
}

#[test]
fn tls_with_the_plain_port_given_explicitly_is_refused() {
    let err = base()
        .broker("broker.lan", 1883)
        .mqtt_tls(BrokerTls::Ca)
        .build()
        .unwrap_err();
    assert_eq!(err.field, Field::BrokerPort);
    assert!(err.to_string().contains("8883"), "{err}");
    // Without TLS, 1883 is fine; with a pin, the default port is 8883.
    assert!(base().broker("broker.lan", 1883).build().is_ok());
    let c = base().mqtt_fingerprint(&[7; 20]).build().unwrap();
    assert_eq!(
        (c.mqtt_tls, c.broker_port),
        (BrokerTls::PinSha1([7; 20]), 8883)
    );
}

#[test]
fn a_pin_of_the_wrong_length_is_refused() {
    let err = base().mqtt_fingerprint(&[1; 16]).build().unwrap_err();
    assert_eq!(err.field, Field::MqttTls);
    assert!(err.to_string().contains("20 bytes (SHA-1)"), "{err}");
    let c = base()
        .mqtt_fingerprint(&[1; 16])
        .mqtt_fingerprint(&[2; 32])
        .build()
        .unwrap();
    assert_eq!(c.mqtt_tls, BrokerTls::PinSha256([2; 32]));
    let c = base()
        .mqtt_fingerprint(&[1; 16])
        .mqtt_tls(BrokerTls::Off)
        .build()
        .unwrap();
    assert_eq!(c.mqtt_tls, BrokerTls::Off);
}

#[test]
fn a_full_config_builds() {
    let c = Config::builder()
        .firmware(0x1337, "v0.1")
        .network("home", "")
        .hidden_network("", bssid(), &"0123456789abcDEF".repeat(4))
        .network(&"s".repeat(32), &"p".repeat(63))
        .mesh_password("mesh secret")
        .mesh_ssid_base("m")
        .broker("10.1.1.1", 1883)
        .mqtt_credentials("user", "pass")
        .mesh_port(4000)
        .in_prefix("a/")
        .out_prefix("b/")
        .max_children(8)
        .max_depth(32)
        .node_id("kitchen")
        .build();
    let c = c.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.firmware_id, 0x1337);
    assert_eq!(c.networks.len(), 3);
    assert!(c.networks[1].hidden);
    assert_eq!(c.networks[1].bssid, Some(bssid()));
    assert_eq!(c.node_id, Some(NodeId::new("kitchen").unwrap()));
    assert_eq!(c.mqtt_username.as_deref(), Some("user"));
}

#[test]
fn firmware_version_is_1_to_31_bytes() {
    assert_eq!(field_of(base().firmware(1, "")), Field::FirmwareVersion);
    assert_eq!(
        field_of(base().firmware(1, &"v".repeat(32))),
        Field::FirmwareVersion
    );
    assert_eq!(
        field_of(base().firmware(1, &"v".repeat(33))),
        Field::FirmwareVersion
    );
    assert!(base().firmware(1, &"v".repeat(31)).build().is_ok());
}

#[test]
fn networks_are_1_to_4() {
    assert_eq!(field_of(Config::builder()), Field::Networks);
    let mut b = Config::builder();
    for i in 0..MAX_NETWORKS {
        b = b.network(&format!("net{i}"), "");
    }
    assert!(b.clone().build().is_ok());
    assert_eq!(field_of(b.network("fifth", "")), Field::Networks);
}

#[test]
fn network_ssid_is_1_to_32_bytes() {
    assert_eq!(field_of(base().network("", "")), Field::NetworkSsid(1));
    assert_eq!(
        field_of(base().network(&"s".repeat(33), "")),
        Field::NetworkSsid(1)
    );
}

#[test]
fn hidden_network_may_have_empty_ssid() {
    assert!(Config::builder()
        .hidden_network("", bssid(), "")
        .build()
        .is_ok());
}

#[test]
fn network_password_is_open_passphrase_or_psk() {
    for bad in [
        "short",
        &"p".repeat(64),
        &"p".repeat(65),
        "eight\u{7f}ch",
        "ünicode-pw",
    ] {
        assert_eq!(
            field_of(base().network("n", bad)),
            Field::NetworkPassword(1),
            "{bad:?}"
        );
    }
    for good in [
        "",
        "8 chars!",
        &"p".repeat(63),
        &"0123456789abcDEF".repeat(4),
    ] {
        assert!(base().network("n", good).build().is_ok(), "{good:?}");
    }
}

#[test]
fn mesh_password_is_8_to_63_printable() {
    assert_eq!(
        field_of(base().mesh_password("1234567")),
        Field::MeshPassword
    );
    assert_eq!(
        field_of(base().mesh_password(&"p".repeat(64))),
        Field::MeshPassword
    );
    assert_eq!(
        field_of(base().mesh_password(&"p".repeat(65))),
        Field::MeshPassword
    );
    assert_eq!(
        field_of(base().mesh_password("tab\there!")),
        Field::MeshPassword
    );
}

#[test]
fn mesh_ssid_base_is_1_to_24_without_spaces() {
    assert_eq!(field_of(base().mesh_ssid_base("")), Field::MeshSsidBase);
    assert_eq!(
        field_of(base().mesh_ssid_base(&"m".repeat(25))),
        Field::MeshSsidBase
    );
    assert_eq!(
        field_of(base().mesh_ssid_base("my mesh")),
        Field::MeshSsidBase
    );
    assert_eq!(
        field_of(base().mesh_ssid_base("mesh\n")),
        Field::MeshSsidBase
    );
    assert!(base().mesh_ssid_base(&"m".repeat(24)).build().is_ok());
}

#[test]
fn broker_host_is_1_to_63_without_whitespace() {
    assert_eq!(field_of(base().broker_host("")), Field::BrokerHost);
    assert_eq!(
        field_of(base().broker_host(&"h".repeat(64))),
        Field::BrokerHost
    );
    assert_eq!(
        field_of(base().broker_host(&"h".repeat(65))),
        Field::BrokerHost
    );
    assert_eq!(field_of(base().broker_host("my broker")), Field::BrokerHost);
}

#[test]
fn broker_port_is_non_zero() {
    assert_eq!(field_of(base().broker("b", 0)), Field::BrokerPort);
}

#[test]
fn mqtt_password_needs_username() {
    assert_eq!(
        field_of(base().mqtt_credentials("", "pw")),
        Field::MqttPassword
    );
    assert!(base().mqtt_credentials("user", "").build().is_ok());
}

#[test]
fn mqtt_credentials_are_at_most_64_bytes() {
    let long = "c".repeat(65);
    assert_eq!(
        field_of(base().mqtt_credentials(&long, "pw")),
        Field::MqttUsername
    );
    assert_eq!(
        field_of(base().mqtt_credentials("u", &long)),
        Field::MqttPassword
    );
    assert!(base()
        .mqtt_credentials(&long[..64], &long[..64])
        .build()
        .is_ok());
}

#[test]
fn mesh_port_is_non_zero() {
    assert_eq!(field_of(base().mesh_port(0)), Field::MeshPort);
}

#[test]
fn prefixes_follow_the_topic_rules() {
    for bad in [
        "",
        "/",
        "a",
        "in",
        "/in/",
        "in+/",
        "in#/",
        "in\0/",
        &"p".repeat(16),
        &"p".repeat(17),
    ] {
        assert_eq!(field_of(base().in_prefix(bad)), Field::InPrefix, "{bad:?}");
        assert_eq!(
            field_of(base().out_prefix(bad)),
            Field::OutPrefix,
            "{bad:?}"
        );
    }
    assert!(base()
        .in_prefix(&format!("{}/", "p".repeat(15)))
        .build()
        .is_ok());
    assert!(base().in_prefix("a/").build().is_ok());
}

#[test]
fn prefixes_must_differ() {
    assert_eq!(
        field_of(base().in_prefix("x/").out_prefix("x/")),
        Field::OutPrefix
    );
    assert_eq!(
        field_of(base().in_prefix("x/").out_prefix("x/out/")),
        Field::OutPrefix
    );
    assert_eq!(
        field_of(base().in_prefix("x/in/").out_prefix("x/")),
        Field::OutPrefix
    );
}

#[test]
fn max_children_is_1_to_8() {
    assert_eq!(field_of(base().max_children(0)), Field::MaxChildren);
    assert_eq!(field_of(base().max_children(9)), Field::MaxChildren);
}

#[test]
fn max_depth_is_1_to_32() {
    assert_eq!(field_of(base().max_depth(0)), Field::MaxDepth);
    assert_eq!(field_of(base().max_depth(33)), Field::MaxDepth);
    assert!(base().max_depth(1).build().is_ok());
}

#[test]
fn node_id_is_validated() {
    for bad in ["", "a/b", "a b", "a+", &"n".repeat(25)] {
        assert_eq!(field_of(base().node_id(bad)), Field::NodeId, "{bad:?}");
    }
}

#[test]
fn timing_durations_are_non_zero_and_keepalive_below_link_timeout() {
    let zero = Timing {
        retry_backoff: Duration::ZERO,
        ..Timing::default()
    };
    assert_eq!(field_of(base().timing(zero)), Field::Timing);
    let slow_keepalive = Timing {
        keepalive_interval: Duration::from_secs(15),
        link_timeout: Duration::from_secs(15),
        ..Timing::default()
    };
    assert_eq!(field_of(base().timing(slow_keepalive)), Field::Timing);
}

#[test]
fn validate_catches_hand_edited_configs() {
    let mut c = base().build().unwrap();
    assert_eq!(c.validate(), Ok(()));
    c.networks[0].hidden = true;
    c.networks[0].ssid.clear();
    assert_eq!(c.validate().unwrap_err().field, Field::NetworkBssid(0));
    c.networks[0].bssid = Some(bssid());
    assert_eq!(c.validate(), Ok(()));
    c.broker_port = 0;
    assert_eq!(c.validate().unwrap_err().field, Field::BrokerPort);
}

#[test]
fn first_problem_is_reported() {
    let err = base().max_children(0).mesh_port(0).build().unwrap_err();
    assert_eq!(err.field, Field::MeshPort);
}

#[test]
fn display_names_the_field() {
    let err = base().in_prefix("in").build().unwrap_err();
    assert_eq!(err.to_string(), "invalid in_prefix: must end with '/'");
    let err = base().network("n", "short").build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid networks[1].password: WPA2 needs 8..=63 printable ASCII characters or 64 hex digits"
    );
    let err = base().mesh_password("short").build().unwrap_err();
    assert!(err.to_string().starts_with("invalid mesh_password: "));
    let e = ConfigError {
        field: Field::NetworkBssid(2),
        reason: "x",
    };
    assert_eq!(e.to_string(), "invalid networks[2].bssid: x");
}

#[test]
fn outbox_len_and_uplink_grace_are_bounded() {
    assert_eq!(field_of(base().outbox_len(0)), Field::OutboxLen);
    assert_eq!(
        field_of(base().outbox_len(mqttmesh_core::config::MAX_OUTBOX_LEN + 1)),
        Field::OutboxLen
    );
    assert!(base().outbox_len(1).build().is_ok());
    let no_grace = Timing {
        uplink_grace: Duration::ZERO,
        ..Timing::default()
    };
    assert!(
        base().timing(no_grace).build().is_ok(),
        "zero: tear down at once"
    );
    let endless = Timing {
        uplink_grace: Duration::from_secs(151),
        ..Timing::default()
    };
    assert_eq!(field_of(base().timing(endless)), Field::Timing);
}

#[test]
fn background_scans_are_off_or_at_least_two_seconds_apart() {
    let with = |refresh| Timing {
        candidate_refresh: refresh,
        ..Timing::default()
    };
    assert!(base().timing(with(Duration::ZERO)).build().is_ok(), "off");
    assert!(base()
        .timing(with(mqttmesh_core::config::MIN_CANDIDATE_REFRESH))
        .build()
        .is_ok());
    let err = base()
        .timing(with(Duration::from_millis(500)))
        .build()
        .unwrap_err();
    assert_eq!(err.field, Field::Timing);
    assert!(err.to_string().contains("candidate_refresh"), "{err}");
}
