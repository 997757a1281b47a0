#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod air;
pub mod app;
pub mod broker;
pub mod flash;
pub mod image;
mod link;
pub mod mesh;
pub mod meshtls;
pub mod mosquitto;
mod mqtt;
pub mod mqtt_tls;
pub mod observer;
pub mod ota;
pub mod radio;
pub mod runtime;
pub mod tls_leaf;
pub mod topology;
pub mod view;
