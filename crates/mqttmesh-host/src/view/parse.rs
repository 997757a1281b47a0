//! Reading what a node publishes under the out prefix (`../shared/spec/compat.md`,
//! "Topics a node publishes" and "OTA over MQTT"): topic shapes and payloads.
//!
//! Everything here takes untrusted bytes from the broker and returns `None` on
//! anything it does not understand; nothing panics on input.

use mqttmesh_core::Mac;

/// Longest node ID taken from a topic (the core's IDs are at most 31 characters).
pub(crate) const MAX_ID_LEN: usize = 64;
/// Longest text payload kept for an `info/*` field, `fw` line or OTA answer.
pub(crate) const MAX_TEXT_LEN: usize = 256;
/// RSSI values outside this range (dBm) are not a radio reading.
const RSSI_RANGE: core::ops::RangeInclusive<i32> = -150..=20;

/// One of the retained `info/*` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoField {
    Available,
    ResetReason,
    Mac,
    MacHostedAp,
    IpLocal,
    Rssi,
    ConnectedTo,
}

/// What an out-prefix topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutTopic<'a> {
    /// `<out>connect`
    Connect,
    /// `<out><id>/<sub>`
    Node { id: &'a str, kind: NodeTopic<'a> },
}

/// The part after `<out><id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeTopic<'a> {
    Info(InfoField),
    Fw,
    Ping,
    /// `ota/<rest>`
    Ota(&'a str),
    /// Anything else: an application publication.
    App,
}

/// Classifies a topic; `None` when it is not under `out` or has no node ID.
pub(crate) fn out_topic<'a>(out: &str, topic: &'a str) -> Option<OutTopic<'a>> {
    let rest = topic.strip_prefix(out)?;
    if rest == "connect" {
        return Some(OutTopic::Connect);
    }
    let (id, sub) = rest.split_once('/')?;
    if !valid_id(id) || sub.is_empty() {
        return None;
    }
    let kind = match sub {
        "info/available" => NodeTopic::Info(InfoField::Available),
        "info/reset_Reason" => NodeTopic::Info(InfoField::ResetReason),
        "info/MAC" => NodeTopic::Info(InfoField::Mac),
        "info/MAC_hosted_AP" => NodeTopic::Info(InfoField::MacHostedAp),
        "info/IP_local" => NodeTopic::Info(InfoField::IpLocal),
        "info/RSSI" => NodeTopic::Info(InfoField::Rssi),
        "info/connectedTo" => NodeTopic::Info(InfoField::ConnectedTo),
        "fw" => NodeTopic::Fw,
        "Ping" => NodeTopic::Ping,
        _ => match sub.strip_prefix("ota/") {
            Some(ota) => NodeTopic::Ota(ota),
            None => NodeTopic::App,
        },
    };
    Some(OutTopic::Node { id, kind })
}

/// A node ID as it may appear as one topic level.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id
            .chars()
            .any(|c| matches!(c, '+' | '#' | '/') || c.is_control())
}

/// A short printable UTF-8 text, trimmed; `None` for anything else.
pub(crate) fn text(payload: &[u8]) -> Option<&str> {
    if payload.len() > MAX_TEXT_LEN {
        return None;
    }
    let s = core::str::from_utf8(payload).ok()?.trim();
    (!s.chars().any(char::is_control)).then_some(s)
}

/// `AA:BB:CC:DD:EE:FF` in either case, normalised to upper case.
pub(crate) fn mac(payload: &[u8]) -> Option<String> {
    Mac::parse(text(payload)?).map(|m| m.to_string())
}

/// RSSI in dBm, e.g. `-61`.
pub(crate) fn rssi(payload: &[u8]) -> Option<i32> {
    text(payload)?
        .parse::<i32>()
        .ok()
        .filter(|v| RSSI_RANGE.contains(v))
}

/// A parsed `fw` answer or `connect` line:
/// `[Connected ]ChipID:00A1B2 FirmwareID:1337 v0.1 IP:10.1.1.2[ mesh]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FwLine {
    pub chip_id: u32,
    pub firmware_id: u32,
    pub version: String,
    pub ip: String,
    pub mesh: bool,
}

/// Parses a `fw`/`connect` line. The version may contain spaces; it runs from the
/// `v` after the firmware ID to the last ` IP:`.
pub(crate) fn fw_line(payload: &[u8]) -> Option<FwLine> {
    let s = text(payload)?;
    let s = s.strip_prefix("Connected ").unwrap_or(s);
    let rest = s.strip_prefix("ChipID:")?;
    let (chip, rest) = rest.split_once(" FirmwareID:")?;
    let (fw, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('v')?;
    let (version, tail) = rest.rsplit_once(" IP:")?;
    let (ip, mesh) = match tail.strip_suffix(" mesh") {
        Some(ip) => (ip, true),
        None => (tail, false),
    };
    let chip_id = hex_u32(chip).filter(|c| *c <= 0x00FF_FFFF)?;
    let firmware_id = hex_u32(fw)?;
    if ip.is_empty() || ip.contains(' ') {
        return None;
    }
    Some(FwLine {
        chip_id,
        firmware_id,
        version: version.to_string(),
        ip: ip.to_string(),
        mesh,
    })
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// One step of an OTA exchange as the node answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OtaStep {
    /// `ota/erase`: the update area was erased in this many microseconds.
    Erase {
        /// Time the erase took.
        micros: u64,
    },
    /// `ota/md5/<hex offset>`: the chunk at `offset` was written; its MD5.
    Md5 {
        /// Byte offset of the chunk.
        offset: u32,
        /// 32 lower-case hex digits.
        md5: String,
    },
    /// `ota/check`: `MD5 Passed`, `MD5 Failed`, or the MD5 of a link-test text.
    Check {
        /// The answer as sent.
        result: String,
    },
    /// `ota/flash`: `Failed` when the node refused to install.
    Flash {
        /// The answer as sent.
        result: String,
    },
}

impl OtaStep {
    /// Short human text, e.g. `md5 @0x300`.
    pub fn describe(&self) -> String {
        match self {
            OtaStep::Erase { micros } => format!("erased in {} ms", micros / 1000),
            OtaStep::Md5 { offset, .. } => format!("chunk @0x{offset:x} written"),
            OtaStep::Check { result } => format!("check: {result}"),
            OtaStep::Flash { result } => format!("flash: {result}"),
        }
    }
}

/// Parses `<rest>` of `<out><id>/ota/<rest>` and its payload.
pub(crate) fn ota(rest: &str, payload: &[u8]) -> Option<OtaStep> {
    let body = text(payload)?;
    match rest {
        "erase" => body.parse().ok().map(|micros| OtaStep::Erase { micros }),
        "check" => Some(OtaStep::Check {
            result: body.to_string(),
        }),
        "flash" => Some(OtaStep::Flash {
            result: body.to_string(),
        }),
        _ => {
            let offset = hex_u32(rest.strip_prefix("md5/")?)?;
            let md5_ok = body.len() == 32 && body.bytes().all(|c| c.is_ascii_hexdigit());
            md5_ok.then(|| OtaStep::Md5 {
                offset,
                md5: body.to_ascii_lowercase(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "esp8266-out/";

    #[test]
    fn topics_are_classified() {
        let node = |t| out_topic(OUT, t);
        assert_eq!(node("esp8266-out/connect"), Some(OutTopic::Connect));
        assert_eq!(
            node("esp8266-out/00A1B2/info/MAC_hosted_AP"),
            Some(OutTopic::Node {
                id: "00A1B2",
                kind: NodeTopic::Info(InfoField::MacHostedAp)
            })
        );
        assert_eq!(
            node("esp8266-out/00A1B2/ota/md5/300"),
            Some(OutTopic::Node {
                id: "00A1B2",
                kind: NodeTopic::Ota("md5/300")
            })
        );
        assert_eq!(
            node("esp8266-out/kitchen/counter"),
            Some(OutTopic::Node {
                id: "kitchen",
                kind: NodeTopic::App
            })
        );
        for bad in [
            "esp8266-in/00A1B2/fw",
            "esp8266-out/00A1B2",
            "esp8266-out//fw",
            "esp8266-out/00A1B2/",
            "esp8266-out/a+b/fw",
        ] {
            assert_eq!(node(bad), None, "{bad}");
        }
        assert_eq!(node(&format!("{OUT}{}/fw", "A".repeat(65))), None);
    }

    #[test]
    fn fw_lines_of_ours_and_the_original_parse() {
        let ours = fw_line(b"ChipID:00A1B2 FirmwareID:1337 v0.1 IP:10.1.1.2 mesh").unwrap();
        assert_eq!(
            ours,
            FwLine {
                chip_id: 0x00A1B2,
                firmware_id: 0x1337,
                version: "0.1".into(),
                ip: "10.1.1.2".into(),
                mesh: true
            }
        );
        let connect =
            fw_line(b"Connected ChipID:1A2B3C FirmwareID:0042 v1.2 beta IP:192.168.4.2").unwrap();
        assert_eq!(connect.chip_id, 0x1A2B3C);
        assert_eq!(connect.firmware_id, 0x42);
        assert_eq!(connect.version, "1.2 beta");
        assert!(!connect.mesh);
    }

    #[test]
    fn bad_fw_lines_are_refused() {
        for bad in [
            &b"ChipID:00A1B2"[..],
            b"ChipID:XYZ FirmwareID:1337 v0.1 IP:1.2.3.4",
            b"ChipID:1000000 FirmwareID:1337 v0.1 IP:1.2.3.4",
            b"ChipID:00A1B2 FirmwareID:123456789 v0.1 IP:1.2.3.4",
            b"ChipID:00A1B2 FirmwareID:1337 0.1 IP:1.2.3.4",
            b"ChipID:00A1B2 FirmwareID:1337 v0.1 IP:",
            b"\xff\xfeChipID",
            b"",
        ] {
            assert_eq!(fw_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(fw_line(&[b'A'; 2000]), None);
    }

    #[test]
    fn info_values_are_checked() {
        assert_eq!(
            mac(b"aa:07:9d:00:00:01").as_deref(),
            Some("AA:07:9D:00:00:01")
        );
        assert_eq!(mac(b"AA:07:9D:00:00"), None);
        assert_eq!(rssi(b"-61"), Some(-61));
        assert_eq!(rssi(b" -61\n"), Some(-61));
        assert_eq!(rssi(b"-99999"), None);
        assert_eq!(rssi(b"strong"), None);
        assert_eq!(text(b"Power on"), Some("Power on"));
        assert_eq!(text(b"bad\x07bell"), None);
        assert_eq!(text(b"\xc3\x28"), None);
    }

    #[test]
    fn ota_answers_parse() {
        assert_eq!(
            ota("erase", b"81234"),
            Some(OtaStep::Erase { micros: 81234 })
        );
        assert_eq!(
            ota("md5/3c0", b"0123456789ABCDEF0123456789abcdef"),
            Some(OtaStep::Md5 {
                offset: 0x3c0,
                md5: "0123456789abcdef0123456789abcdef".into()
            })
        );
        assert_eq!(
            ota("check", b"MD5 Passed"),
            Some(OtaStep::Check {
                result: "MD5 Passed".into()
            })
        );
        assert_eq!(
            ota("flash", b"Failed"),
            Some(OtaStep::Flash {
                result: "Failed".into()
            })
        );
        assert_eq!(ota("erase", b"-5"), None);
        assert_eq!(ota("md5/zz", b"0123456789abcdef0123456789abcdef"), None);
        assert_eq!(ota("md5/10", b"short"), None);
        assert_eq!(ota("start", b"x"), None);
    }
}
