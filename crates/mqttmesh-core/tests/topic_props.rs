//! Property tests for the topic scheme: the parser never panics on hostile input, and
//! what the builders produce parses back to what went in.

use mqttmesh_core::identity::NodeId;
use mqttmesh_core::topic::{
    in_node, out_node, parse_firmware_id, parse_incoming, Incoming, MsgType, MAX_TOPIC_LEN,
};
use proptest::prelude::*;

const IN: &str = "esp8266-in/";

/// A node ID an override may hold (printable ASCII without `/`, `+`, `#`), not one of
/// the reserved first levels.
fn node_id() -> impl Strategy<Value = String> {
    "[!-*,-.0-~&&[^#]]{1,24}".prop_filter("reserved level", |s| {
        !matches!(s.as_str(), "fw" | "broadcast" | "ota")
    })
}

/// An application subtopic: one or more non-empty levels without wildcards or NUL.
fn subtopic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ .\\-]{1,12}(/[a-zA-Z0-9_\\-]{1,12}){0,4}"
}

proptest! {
    #[test]
    fn parse_incoming_never_panics(prefix in "\\PC{0,20}", topic in "\\PC{0,200}") {
        let _ = parse_incoming(&prefix, &topic);
        let _ = parse_incoming(IN, &topic);
    }

    #[test]
    fn parse_incoming_never_panics_on_prefixed_topics(rest in "[a-z0-9/]{0,140}") {
        let topic = format!("{IN}{rest}");
        if let Some(incoming) = parse_incoming(IN, &topic) {
            prop_assert!(topic.len() <= MAX_TOPIC_LEN);
            match incoming {
                Incoming::Node { id, sub } => {
                    prop_assert!(!id.is_empty() && !id.contains('/') && !sub.is_empty());
                }
                Incoming::Broadcast { sub } => prop_assert!(!sub.is_empty()),
                Incoming::Ota { target, command } | Incoming::Ota2 { target, command } => {
                    prop_assert!(!target.is_empty() && !command.is_empty());
                }
                Incoming::Fw => {}
            }
        }
    }

    #[test]
    fn in_node_topics_parse_back(id in node_id(), sub in subtopic()) {
        match in_node(IN, &id, &sub) {
            Ok(topic) => prop_assert_eq!(
                parse_incoming(IN, &topic),
                Some(Incoming::Node { id: &id, sub: &sub })
            ),
            Err(e) => prop_assert!(IN.len() + id.len() + 1 + sub.len() > MAX_TOPIC_LEN, "{e}"),
        }
    }

    #[test]
    fn out_node_topics_parse_back_under_the_out_prefix(
        chip in any::<u32>(),
        sub in subtopic(),
    ) {
        // The same parser works on the out side when given the out prefix.
        let id = NodeId::from_chip_id(chip);
        let topic = out_node("esp8266-out/", &id, &sub).expect("short enough");
        prop_assert_eq!(
            parse_incoming("esp8266-out/", &topic),
            Some(Incoming::Node { id: id.as_str(), sub: &sub })
        );
    }

    #[test]
    fn firmware_id_round_trips(id in any::<u32>()) {
        prop_assert_eq!(parse_firmware_id(&format!("{id:X}")), Some(id));
        prop_assert_eq!(parse_firmware_id(&format!("{id:x}")), Some(id));
        prop_assert_eq!(parse_firmware_id(&format!("0x{id:X}")), Some(id));
        prop_assert_eq!(parse_firmware_id(&format!("0X{id:08x}")), Some(id));
    }

    #[test]
    fn parse_firmware_id_never_panics(s in "\\PC{0,16}") {
        if let Some(id) = parse_firmware_id(&s) {
            let digits = s.trim_start_matches("0x").trim_start_matches("0X");
            prop_assert!(!digits.is_empty() && digits.len() <= 8, "{s:?} -> {id}");
        }
    }

    #[test]
    fn msg_type_codes_round_trip(code in any::<u8>()) {
        match MsgType::from_u8(code) {
            Some(t) => prop_assert_eq!(t.to_u8(), code),
            None => prop_assert!(code > 6),
        }
    }
}
