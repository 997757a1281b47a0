//! The original OTA exchange, `../shared/spec/compat.md` "OTA over MQTT", to the letter.
