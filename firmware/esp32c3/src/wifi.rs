//! The radio: scans, station association (router by DHCP, mesh parent by the address
//! plan of `addr.rs`), and the node's own hidden AP, with esp-radio in AP+STA mode.
//!
//! The AP runs from start-up (switching the WiFi mode would drop the station link);
//! while the node keeps it "closed" it carries a random passphrase nobody knows, so no
//! station can join, and the mesh port refuses connections.

use embassy_net::{ConfigV4, Ipv4Cidr, Stack, StaticConfigV4};
use embassy_time::{Duration, with_timeout};
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, WifiController, ap::AccessPointConfig, scan::ScanConfig,
    sta::StationConfig,
};
use heapless::{String, Vec};
use mqttmesh_core::Mac;
use mqttmesh_core::identity;
use mqttmesh_core::node::AssocError;
use mqttmesh_core::uplink::{MAX_SCAN, ScanEntry};

use crate::addr;
use crate::shared::{AP_OPEN, WIFI_CMD, WifiCmd, with_node};

/// What the WiFi task needs to know about the node.
pub struct Radio {
    pub controller: WifiController<'static>,
    pub sta: Stack<'static>,
    pub chip_id: u32,
    pub mesh_key: u32,
    pub mesh_password: &'static str,
    pub closed_password: String<64>,
    pub ap_ssid: String<32>,
    pub associate_timeout: Duration,
    pub sta_config: StationConfig,
    pub ap_config: AccessPointConfig,
}

fn ap_config(ssid: &str, password: &str, channel: u8, max: u8) -> AccessPointConfig {
    AccessPointConfig::default()
        .with_ssid(ssid.try_into().unwrap_or_default())
        .with_ssid_hidden(true)
        .with_channel(channel.max(1))
        .with_authentication(AuthenticationMethodConfig::Wpa2Personal(
            password.try_into().unwrap_or_default(),
        ))
        .with_max_connections(u16::from(max))
}

impl Radio {
    /// The closed AP: hidden, a passphrase only this boot knows.
    pub fn closed_ap(ssid: &str, closed_password: &str) -> AccessPointConfig {
        ap_config(ssid, closed_password, 1, 1)
    }

    fn apply(&mut self) -> bool {
        let config = Config::AccessPointStation(self.sta_config.clone(), self.ap_config.clone());
        match self.controller.set_config(&config) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("wifi: set_config failed: {e:?}");
                false
            }
        }
    }

    async fn scan(&mut self, channel: Option<u8>) {
        let mut config = ScanConfig::default().with_show_hidden(true);
        if let Some(channel) = channel {
            // One channel: one dwell instead of a sweep, and an online node stays on
            // its channel for all but that dwell.
            config = config.with_channel(channel);
        }
        let mut entries: Vec<ScanEntry, MAX_SCAN> = Vec::new();
        match self.controller.scan_async(&config).await {
            Ok(aps) => {
                for ap in aps.iter().take(MAX_SCAN) {
                    let mut ssid = String::new();
                    let _ = ssid.push_str(ap.ssid.as_str());
                    let _ = entries.push(ScanEntry {
                        bssid: Mac(ap.bssid),
                        hidden: ssid.is_empty(),
                        ssid,
                        rssi: ap.signal_strength,
                        channel: ap.channel,
                        depth: None,
                        free: None,
                    });
                }
            }
            Err(e) => log::warn!("wifi: scan failed: {e:?}"),
        }
        log::info!("wifi: scan found {} access points", entries.len());
        with_node(|node, now| node.handle_scan_done(now, &entries));
    }

    async fn associate(&mut self, bssid: Mac, ssid: &str, password: &str, channel: u8) {
        let parent_chip = identity::mesh_chip_id(&bssid, self.mesh_key)
            .filter(|_| !crate::config::is_router(&bssid, ssid));
        // A mesh AP hides its SSID; ESP-IDF joins a hidden AP by SSID and BSSID.
        let ssid: String<32> = match parent_chip {
            Some(_) if ssid.is_empty() => {
                identity::mesh_ssid(crate::config::MESH_SSID_BASE, &bssid)
            }
            _ => ssid.try_into().unwrap_or_default(),
        };
        let auth = if password.is_empty() {
            AuthenticationMethodConfig::Open
        } else {
            AuthenticationMethodConfig::WpaWpa2Personal(password.try_into().unwrap_or_default())
        };
        self.sta_config = StationConfig::default()
            .with_ssid(ssid.as_str().try_into().unwrap_or_default())
            .with_bssid(bssid.0)
            .with_channel(channel)
            .with_authentication(auth);
        let _ = self.controller.disconnect_async().await;
        let result = if self.apply() {
            self.join(parent_chip).await
        } else {
            Err(AssocError::NotFound)
        };
        if let Err(e) = result {
            log::info!("wifi: associate {bssid} failed: {e}");
            let _ = self.controller.disconnect_async().await;
        }
        with_node(|node, now| node.handle_associated(now, bssid, result));
    }

    async fn join(&mut self, parent_chip: Option<u32>) -> Result<core::net::Ipv4Addr, AssocError> {
        let deadline = self.associate_timeout;
        match with_timeout(deadline, self.controller.connect_async()).await {
            Err(_) => return Err(AssocError::Timeout),
            Ok(Err(e)) => {
                log::info!("wifi: connect: {e:?}");
                return Err(AssocError::AuthFailed);
            }
            Ok(Ok(_)) => {}
        }
        match parent_chip {
            Some(parent) => {
                let address = addr::child_address(parent, self.chip_id);
                self.sta.set_config_v4(ConfigV4::Static(StaticConfigV4 {
                    address: Ipv4Cidr::new(address, 24),
                    gateway: Some(addr::ap_gateway(parent)),
                    dns_servers: Default::default(),
                }));
                Ok(address)
            }
            None => {
                self.sta.set_config_v4(ConfigV4::Dhcp(Default::default()));
                match with_timeout(deadline, self.sta.wait_config_up()).await {
                    Ok(()) => self
                        .sta
                        .config_v4()
                        .map(|c| c.address.address())
                        .ok_or(AssocError::Timeout),
                    Err(_) => Err(AssocError::Timeout),
                }
            }
        }
    }

    async fn handle(&mut self, cmd: WifiCmd) {
        match cmd {
            WifiCmd::Scan(channel) => self.scan(channel).await,
            WifiCmd::Associate {
                bssid,
                ssid,
                password,
                channel,
            } => self.associate(bssid, &ssid, &password, channel).await,
            WifiCmd::Disassociate => {
                let _ = self.controller.disconnect_async().await;
                self.sta.set_config_v4(ConfigV4::None);
            }
            WifiCmd::OpenAp {
                ssid,
                channel,
                max_children,
            } => {
                self.ap_config = ap_config(&ssid, self.mesh_password, channel, max_children);
                AP_OPEN.store(self.apply(), core::sync::atomic::Ordering::Relaxed);
                log::info!("wifi: AP {ssid} open on channel {channel}");
            }
            WifiCmd::CloseAp => {
                AP_OPEN.store(false, core::sync::atomic::Ordering::Relaxed);
                self.ap_config = Self::closed_ap(&self.ap_ssid, &self.closed_password);
                self.apply();
                log::info!("wifi: AP closed");
            }
        }
    }
}

#[embassy_executor::task]
pub async fn wifi_task(mut radio: Radio) {
    radio.apply();
    loop {
        let cmd = WIFI_CMD.receive().await;
        radio.handle(cmd).await;
    }
}
