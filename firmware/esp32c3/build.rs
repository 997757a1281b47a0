//! Turns the build-time configuration (`config.toml`, or the file `MQTTMESH_CONFIG`
//! names, else `config.example.toml`, with environment overrides) into Rust constants
//! in `$OUT_DIR/build_config.rs`, after checking it with the core's own validation so a
//! bad setting fails the build instead of the chip.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use mqttmesh_core::Config;
use mqttmesh_core::identity::Mac;
use toml_edit::{DocumentMut, Item};

/// Environment variables that override one value each.
const OVERRIDES: &[&str] = &[
    "MQTTMESH_WIFI_SSID",
    "MQTTMESH_WIFI_PASSWORD",
    "MQTTMESH_MESH_PASSWORD",
    "MQTTMESH_BROKER_HOST",
    "MQTTMESH_BROKER_PORT",
    "MQTTMESH_MQTT_USERNAME",
    "MQTTMESH_MQTT_PASSWORD",
    "MQTTMESH_OTA_PUBLIC_KEY",
];

struct Network {
    ssid: String,
    password: String,
    bssid: Option<[u8; 6]>,
}

struct Settings {
    firmware_id: u32,
    firmware_version: String,
    led_gpio: u8,
    publish_interval_secs: u32,
    networks: Vec<Network>,
    mesh_password: String,
    mesh_ssid_base: String,
    mesh_port: u16,
    max_children: u8,
    broker_host: String,
    broker_port: u16,
    mqtt_username: Option<String>,
    mqtt_password: Option<String>,
    ota_public_key: Option<[u8; 32]>,
    ota_refuse_downgrade: bool,
}

/// 64 hex digits (the one line of `mqttmesh keygen`'s `ota_ed25519.pub.hex`).
fn parse_key(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "[ota] public_key must be 64 hex digits (the line in ota_ed25519.pub.hex), got {} characters",
            s.len()
        ));
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-env-changed=MQTTMESH_CONFIG");
    for var in OVERRIDES {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let path = match env::var_os("MQTTMESH_CONFIG") {
        Some(p) => PathBuf::from(p),
        None if dir.join("config.toml").exists() => dir.join("config.toml"),
        None => dir.join("config.example.toml"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("config.toml").display()
    );
    println!("cargo:rerun-if-changed=partitions.csv");

    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())));
    let doc: DocumentMut = text
        .parse()
        .unwrap_or_else(|e| fail(&format!("{} is not valid TOML: {e}", path.display())));
    let mut settings = read(&doc).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    apply_overrides(&mut settings).unwrap_or_else(|e| fail(&e));
    check(&settings).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    if path.ends_with("config.example.toml") {
        println!(
            "cargo:warning=building with config.example.toml: copy it to config.toml and set your networks and broker"
        );
    }

    let out =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("build_config.rs");
    fs::write(&out, render(&settings))
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}

fn fail(msg: &str) -> ! {
    eprintln!("firmware configuration error: {msg}");
    std::process::exit(1);
}

fn read(doc: &DocumentMut) -> Result<Settings, String> {
    let int = |table: &str, key: &str, default: i64| -> Result<i64, String> {
        match doc.get(table).and_then(|t| t.get(key)) {
            None => Ok(default),
            Some(item) => item
                .as_integer()
                .ok_or_else(|| format!("[{table}] {key} must be an integer")),
        }
    };
    let string =
        |table: &str, key: &str, default: Option<&str>| -> Result<Option<String>, String> {
            match doc.get(table).and_then(|t| t.get(key)) {
                None => Ok(default.map(str::to_owned)),
                Some(item) => item
                    .as_str()
                    .map(|s| Some(s.to_owned()))
                    .ok_or_else(|| format!("[{table}] {key} must be a string")),
            }
        };
    let ranged = |table: &str, key: &str, default: i64, max: i64| -> Result<i64, String> {
        let v = int(table, key, default)?;
        if (0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(format!("[{table}] {key} = {v} is out of range 0..={max}"))
        }
    };

    let mut networks = Vec::new();
    if let Some(item) = doc.get("network") {
        let tables = item
            .as_array_of_tables()
            .ok_or("`network` must be an array of tables: [[network]]")?;
        for (i, t) in tables.iter().enumerate() {
            let get = |k: &str| t.get(k).and_then(Item::as_str).map(str::to_owned);
            let bssid = match get("bssid") {
                None => None,
                Some(s) => Some(
                    Mac::parse(&s)
                        .ok_or_else(|| {
                            format!(
                                "[[network]] #{}: bssid {s:?} is not AA:BB:CC:DD:EE:FF",
                                i + 1
                            )
                        })?
                        .0,
                ),
            };
            networks.push(Network {
                ssid: get("ssid").unwrap_or_default(),
                password: get("password").unwrap_or_default(),
                bssid,
            });
        }
    }

    Ok(Settings {
        firmware_id: u32::try_from(ranged("firmware", "id", 0, i64::from(u32::MAX))?)
            .map_err(|e| e.to_string())?,
        firmware_version: string("firmware", "version", Some("0.1.0"))?.unwrap_or_default(),
        led_gpio: match ranged("app", "led_gpio", 8, 21)? as u8 {
            12..=17 => {
                return Err(
                    "[app] led_gpio: GPIO12..17 drive the SPI flash; pick another pin".into(),
                );
            }
            pin => pin,
        },
        publish_interval_secs: ranged("app", "publish_interval_secs", 5, 86_400)? as u32,
        networks,
        mesh_password: string(
            "mesh",
            "password",
            Some(mqttmesh_core::config::DEFAULT_MESH_PASSWORD),
        )?
        .unwrap_or_default(),
        mesh_ssid_base: string(
            "mesh",
            "ssid_base",
            Some(mqttmesh_core::config::DEFAULT_MESH_SSID_BASE),
        )?
        .unwrap_or_default(),
        mesh_port: ranged("mesh", "port", 1884, 65_535)? as u16,
        max_children: ranged("mesh", "max_children", 4, 255)? as u8,
        broker_host: string("broker", "host", None)?.unwrap_or_default(),
        broker_port: ranged("broker", "port", 1883, 65_535)? as u16,
        mqtt_username: string("broker", "username", None)?,
        mqtt_password: string("broker", "password", None)?,
        ota_public_key: string("ota", "public_key", None)?
            .map(|k| parse_key(&k))
            .transpose()?,
        ota_refuse_downgrade: match doc.get("ota").and_then(|t| t.get("refuse_downgrade")) {
            None => false,
            Some(item) => item
                .as_bool()
                .ok_or("[ota] refuse_downgrade must be true or false")?,
        },
    })
}

fn apply_overrides(s: &mut Settings) -> Result<(), String> {
    let var = |name: &str| env::var(name).ok();
    if let Some(ssid) = var("MQTTMESH_WIFI_SSID") {
        let password = var("MQTTMESH_WIFI_PASSWORD").unwrap_or_default();
        s.networks.insert(
            0,
            Network {
                ssid,
                password,
                bssid: None,
            },
        );
        s.networks.truncate(mqttmesh_core::config::MAX_NETWORKS);
    } else if var("MQTTMESH_WIFI_PASSWORD").is_some() {
        return Err("MQTTMESH_WIFI_PASSWORD is set without MQTTMESH_WIFI_SSID".into());
    }
    if let Some(v) = var("MQTTMESH_MESH_PASSWORD") {
        s.mesh_password = v;
    }
    if let Some(v) = var("MQTTMESH_BROKER_HOST") {
        s.broker_host = v;
    }
    if let Some(v) = var("MQTTMESH_BROKER_PORT") {
        s.broker_port = v
            .parse()
            .map_err(|_| format!("MQTTMESH_BROKER_PORT={v:?} is not a port number"))?;
    }
    if let Some(v) = var("MQTTMESH_MQTT_USERNAME") {
        s.mqtt_username = Some(v);
    }
    if let Some(v) = var("MQTTMESH_MQTT_PASSWORD") {
        s.mqtt_password = Some(v);
    }
    if let Some(v) = var("MQTTMESH_OTA_PUBLIC_KEY") {
        s.ota_public_key =
            Some(parse_key(&v).map_err(|e| format!("MQTTMESH_OTA_PUBLIC_KEY: {e}"))?);
    }
    Ok(())
}

/// Runs the same validation the node runs at start-up.
fn check(s: &Settings) -> Result<(), String> {
    let mut b = Config::builder()
        .firmware(s.firmware_id, &s.firmware_version)
        .mesh_password(&s.mesh_password)
        .mesh_ssid_base(&s.mesh_ssid_base)
        .broker(&s.broker_host, s.broker_port)
        .mesh_port(s.mesh_port)
        .max_children(s.max_children);
    for n in &s.networks {
        b = match n.bssid {
            Some(bssid) => b.hidden_network(&n.ssid, Mac(bssid), &n.password),
            None => b.network(&n.ssid, &n.password),
        };
    }
    if let Some(key) = s.ota_public_key {
        b = b.ota_public_key(key);
    }
    b = b.ota_refuse_downgrade(s.ota_refuse_downgrade);
    if let Some(user) = &s.mqtt_username {
        b = b.mqtt_credentials(user, s.mqtt_password.as_deref().unwrap_or(""));
    } else if s.mqtt_password.is_some() {
        return Err("[broker] password is set without a username".into());
    }
    b.build().map(|_| ()).map_err(|e| e.to_string())
}

fn render(s: &Settings) -> String {
    let mut o =
        String::from("// Generated by build.rs from the firmware configuration. Do not edit.\n");
    let _ = writeln!(o, "pub const FIRMWARE_ID: u32 = {:#x};", s.firmware_id);
    let _ = writeln!(
        o,
        "pub const FIRMWARE_VERSION: &str = {:?};",
        s.firmware_version
    );
    let _ = writeln!(o, "pub const LED_GPIO: u8 = {};", s.led_gpio);
    let _ = writeln!(
        o,
        "pub const PUBLISH_INTERVAL_SECS: u64 = {};",
        s.publish_interval_secs
    );
    let _ = writeln!(o, "pub const MESH_PASSWORD: &str = {:?};", s.mesh_password);
    let _ = writeln!(
        o,
        "pub const MESH_SSID_BASE: &str = {:?};",
        s.mesh_ssid_base
    );
    let _ = writeln!(o, "pub const MESH_PORT: u16 = {};", s.mesh_port);
    let _ = writeln!(o, "pub const MAX_CHILDREN: u8 = {};", s.max_children);
    let _ = writeln!(o, "pub const BROKER_HOST: &str = {:?};", s.broker_host);
    let _ = writeln!(o, "pub const BROKER_PORT: u16 = {};", s.broker_port);
    let _ = writeln!(
        o,
        "pub const MQTT_USERNAME: Option<&str> = {:?};",
        s.mqtt_username
    );
    let _ = writeln!(
        o,
        "pub const MQTT_PASSWORD: Option<&str> = {:?};",
        s.mqtt_password
    );
    let _ = writeln!(
        o,
        "pub const OTA_PUBLIC_KEY: Option<[u8; 32]> = {:?};",
        s.ota_public_key
    );
    let _ = writeln!(
        o,
        "pub const OTA_REFUSE_DOWNGRADE: bool = {};",
        s.ota_refuse_downgrade
    );
    let _ = writeln!(o, "/// (ssid, password, bssid of a hidden network)");
    let _ = writeln!(
        o,
        "pub const NETWORKS: &[(&str, &str, Option<[u8; 6]>)] = &["
    );
    for n in &s.networks {
        let _ = writeln!(o, "    ({:?}, {:?}, {:?}),", n.ssid, n.password, n.bssid);
    }
    let _ = writeln!(o, "];");
    o
}
