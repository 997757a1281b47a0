//! Fuzzes the topic scheme (`../shared/spec/compat.md` "Topics a node reacts to"):
//! any string under any prefix classifies without panicking, and what it yields is
//! consistent with the topic it came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttmesh_core::topic::{self, Incoming, MAX_TOPIC_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // First line: the prefix; the rest: the topic.
    let (prefix, topic) = text.split_once('\n').unwrap_or(("esp8266-in/", text));
    let _ = topic::parse_firmware_id(topic);
    match topic::parse_incoming(prefix, topic) {
        None => {}
        Some(incoming) => {
            assert!(topic.starts_with(prefix) && topic.len() <= MAX_TOPIC_LEN);
            match incoming {
                Incoming::Node { id, sub } => {
                    assert!(!id.is_empty() && !sub.is_empty() && !id.contains('/'));
                    assert_eq!(topic, format!("{prefix}{id}/{sub}"));
                }
                Incoming::Broadcast { sub } => assert!(topic.ends_with(sub) && !sub.is_empty()),
                Incoming::Ota { target, command } | Incoming::Ota2 { target, command } => {
                    assert!(!target.is_empty() && !command.is_empty());
                }
                Incoming::Fw => {}
            }
        }
    }
});
