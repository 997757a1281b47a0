//! Host runtime for mqttmesh (std + tokio): drives core nodes over real TCP on
//! loopback, and provides the test brokers (an embedded rumqttd and a managed
//! Mosquitto process).

pub mod broker;
pub mod mosquitto;
