//! mqttmesh on the ESP32-C3: one mesh node driven by `mqttmesh-core`.
//!
//! Tasks: the node loop (this file: feeds the chip clock to the node, drains its
//! outputs and routes them), the WiFi task (`wifi.rs`), the broker session
//! (`mqtt.rs`), the parent link and the child acceptors (`links.rs`), and the two
//! embassy-net stacks (station and AP). OTA is in `ota.rs`, the hello-world
//! application at the bottom of this file. See the README, "ESP32-C3 firmware".

#![no_std]
#![no_main]

extern crate alloc;

mod addr;
mod config;
mod links;
mod mqtt;
mod mqtt_codec;
mod ota;
mod shared;
mod tls_pin;
mod wifi;

use core::fmt::Write as _;

use embassy_executor::Spawner;
use embassy_futures::select::{Either3, select3};
use embassy_net::{Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_time::{Duration, Instant, Timer, with_timeout};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::efuse::{self, MacAddress};
use esp_hal::gpio::{AnyPin, Level, Output, OutputConfig};
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_radio::wifi::{Interface, WifiController};
use heapless::String;
use mqttmesh_core::identity;
use mqttmesh_core::node::{Event, Level as LogLevel};
use mqttmesh_core::{Action, MsgType, Node};
use static_cell::StaticCell;

use crate::shared::{
    ACCEPTORS, LINK_CLOSE, LINK_TX, MQTT_CMD, MqttCmd, NODE, PARENT_OPEN, WAKE, WIFI_CMD, WifiCmd,
    with_node,
};

// The application descriptor carries the configured firmware version, so that
// `mqttmesh ota` and `mqttmesh image-info` read the same version the node reports.
esp_bootloader_esp_idf::esp_app_desc!(
    config::FIRMWARE_VERSION,
    env!("CARGO_PKG_NAME"),
    esp_bootloader_esp_idf::BUILD_TIME,
    esp_bootloader_esp_idf::BUILD_DATE,
    esp_bootloader_esp_idf::ESP_IDF_COMPATIBLE_VERSION,
    esp_bootloader_esp_idf::MMU_PAGE_SIZE,
    0,
    u16::MAX,
    esp_bootloader_esp_idf::SECURE_VERSION
);

/// A trial image that has not reached the broker after this long is given up.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(300);

#[embassy_executor::task(pool_size = 2)]
async fn net_task(mut runner: Runner<'static, Interface>) {
    runner.run().await
}

/// Spawns a task; a full task pool is a bug in this file, reported and halted on.
fn spawn<S>(
    spawner: &Spawner,
    token: Result<embassy_executor::SpawnToken<S>, embassy_executor::SpawnError>,
) {
    match token {
        Ok(t) => spawner.spawn(t),
        Err(e) => halt(format_args!(
            "cannot start a task: {e:?} (a bug: task pool too small)"
        )),
    }
}

/// Logs why the node cannot run and stops (a watchdog or the reset button restarts it).
fn halt(msg: core::fmt::Arguments<'_>) -> ! {
    log::error!("{msg}");
    loop {
        core::hint::spin_loop();
    }
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    esp_println::logger::init_logger_from_env();
    let p = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: 16 * 1024);
    let timg0 = TimerGroup::new(p.TIMG0);
    esp_rtos::start(timg0.timer0, p.FROM_CPU_INTR0);

    let config = match config::node_config() {
        Ok(c) => c,
        Err(e) => halt(format_args!(
            "invalid configuration: {e}; fix config.toml and rebuild"
        )),
    };
    // The chip ID is the low 24 bits of the factory MAC, as on the ESP8266.
    let factory = efuse::base_mac_address();
    let f = factory.as_bytes(); // an EUI-48: 6 bytes
    let chip_id = u32::from_be_bytes([0, f[3], f[4], f[5]]);
    let key = identity::mesh_key(&config.mesh_password);
    let sta_mac = identity::station_mac(chip_id, key);
    // The keyed MACs (compat.md "Node identity"): the station MAC becomes the base MAC;
    // esp-hal derives the AP MAC from it by clearing bit 0x04 of byte 0 (it sets 0x02,
    // already set), which is exactly the keyed AP MAC.
    if let Err(e) = efuse::override_mac_address(MacAddress::new_eui48(sta_mac.0)) {
        log::warn!("cannot set the keyed MAC ({e:?}); other nodes will not recognise this one");
    }
    log::info!(
        "mqttmesh node {:06X}: station MAC {}, AP MAC {}, firmware {:#06X} v{}",
        chip_id,
        sta_mac,
        identity::ap_mac(chip_id, key),
        config.firmware_id,
        config.firmware_version
    );

    let controller = match WifiController::new(p.WIFI, Default::default()) {
        Ok(c) => c,
        Err(e) => halt(format_args!(
            "WiFi start failed: {e:?}; press reset to retry"
        )),
    };
    // Read after the radio is on: the RNG is a true random source only then, and the
    // seed feeds the join handshake's nonces.
    let rng = Rng::new();
    let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
    static AP_RES: StaticCell<StackResources<{ ACCEPTORS + 1 }>> = StaticCell::new();
    static STA_RES: StaticCell<StackResources<5>> = StaticCell::new();
    let gateway = addr::ap_gateway(chip_id);
    let (ap_stack, ap_runner) = embassy_net::new(
        Interface::access_point(),
        embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(gateway, 24),
            gateway: None,
            dns_servers: Default::default(),
        }),
        AP_RES.init(StackResources::new()),
        seed,
    );
    let (sta_stack, sta_runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::default(),
        STA_RES.init(StackResources::new()),
        seed ^ 0x5A5A,
    );

    let mut closed_password: String<64> = String::new();
    let _ = write!(closed_password, "{:08x}{:08x}", rng.random(), rng.random());
    let ap_ssid = identity::mesh_ssid(&config.mesh_ssid_base, &identity::ap_mac(chip_id, key));
    let radio = wifi::Radio {
        controller,
        sta: sta_stack,
        chip_id,
        mesh_key: key,
        mesh_password: config::MESH_PASSWORD,
        ap_config: wifi::Radio::closed_ap(&ap_ssid, &closed_password),
        closed_password,
        ap_ssid,
        associate_timeout: Duration::from_millis(config.timing.associate_timeout.millis()),
        sta_config: Default::default(),
    };
    let keep_alive = Duration::from_millis(config.timing.mqtt_keepalive.millis());
    spawn(&spawner, net_task(ap_runner));
    spawn(&spawner, net_task(sta_runner));
    spawn(&spawner, wifi::wifi_task(radio));
    spawn(&spawner, mqtt::mqtt_task(sta_stack, keep_alive));
    spawn(&spawner, links::parent_task(sta_stack, config.mesh_port));
    for _ in 0..usize::from(config.max_children + 1).min(ACCEPTORS) {
        spawn(&spawner, links::child_task(ap_stack, config.mesh_port));
    }

    let mut ota = match ota::Ota::new(esp_storage::FlashStorage::new(p.FLASH), &config) {
        Ok(o) => Some(o),
        Err(e) => {
            log::warn!("OTA unavailable: {e}");
            None
        }
    };
    let trial_until = ota
        .as_ref()
        .filter(|o| o.on_trial())
        .map(|_| Instant::now() + TRIAL_TIMEOUT);

    // SAFETY: the pin number comes from the build-time configuration and nothing else
    // in this firmware drives that GPIO.
    #[allow(unsafe_code)]
    let led_pin = unsafe { AnyPin::steal(config::LED_GPIO) };
    let mut app = App {
        led: Output::new(led_pin, Level::Low, OutputConfig::default()),
        counter: 0,
        mesh_key: key,
        parent_bssid: None,
    };

    build_node(config, chip_id, seed);
    let mut next_tick = Instant::now() + Duration::from_secs(config::PUBLISH_INTERVAL_SECS);
    loop {
        app.drain(&mut ota).await;
        if let Some(until) = trial_until
            && Instant::now() > until
            && ota.as_ref().is_some_and(|o| o.on_trial())
        {
            log::warn!(
                "trial image did not reach the broker in time; returning to the previous one"
            );
            if let Some(o) = ota.as_mut() {
                o.give_up();
            }
            esp_hal::system::software_reset();
        }
        let deadline = NODE
            .lock(|c| c.borrow().as_ref().and_then(|n| n.poll_timeout()))
            .map_or(Instant::MAX, |t| Instant::from_millis(t.millis()));
        match select3(WAKE.wait(), Timer::at(deadline), Timer::at(next_tick)).await {
            Either3::First(()) => {}
            Either3::Second(()) => with_node(|node, now| node.handle_timeout(now)),
            Either3::Third(()) => {
                next_tick += Duration::from_secs(config::PUBLISH_INTERVAL_SECS);
                app.tick();
            }
        }
    }
}

/// Builds the node into its static cell. Not inlined: its temporaries (about 30 KiB)
/// then take stack only once, at start-up, not in every poll of the node loop.
#[inline(never)]
fn build_node(config: mqttmesh_core::Config, chip_id: u32, seed: u64) {
    let node = shared::NODE_CELL.uninit().write(Node::new(
        config,
        chip_id,
        seed,
        reset_reason(),
        shared::now(),
    ));
    NODE.lock(|cell| *cell.borrow_mut() = Some(node));
}

fn reset_reason() -> &'static str {
    match esp_hal::system::reset_reason() {
        Some(esp_hal::rtc_cntl::SocResetReason::ChipPowerOn) => "Power on",
        Some(esp_hal::rtc_cntl::SocResetReason::CoreSw) => "Software/System restart",
        Some(_) => "Reset",
        None => "Unknown",
    }
}

/// The hello-world application and the routing of the node's outputs.
struct App<'a> {
    led: Output<'a>,
    counter: u32,
    mesh_key: u32,
    parent_bssid: Option<mqttmesh_core::Mac>,
}

impl App<'_> {
    /// Publishes the counter (the original's example: a periodic message).
    fn tick(&mut self) {
        self.counter = self.counter.wrapping_add(1);
        let mut text: String<12> = String::new();
        let _ = write!(text, "{}", self.counter);
        let result = with_node(|node, _| {
            if node.connected() {
                Some(node.publish("counter", text.as_bytes(), MsgType::Qos0))
            } else {
                None
            }
        });
        if let Some(Err(e)) = result {
            log::warn!("counter not published: {e}");
        }
    }

    /// A message for this node: toggle the LED (`led` with `on`/`off` sets it).
    fn on_message(&mut self, subtopic: &str, payload: &[u8]) {
        log::info!("message {subtopic}: {} bytes", payload.len());
        match (subtopic, payload) {
            ("led", b"on") => self.led.set_high(),
            ("led", b"off") => self.led.set_low(),
            _ => self.led.toggle(),
        }
    }

    /// Drains the node in the order of its run-loop contract.
    async fn drain(&mut self, ota: &mut Option<ota::Ota>) {
        let mut buf = [0u8; mqttmesh_core::link::MAX_FRAME];
        loop {
            let mut progressed = false;
            while let Some((link, len)) =
                NODE.lock(|c| c.borrow_mut().as_mut()?.poll_transmit(&mut buf))
            {
                progressed = true;
                let Ok(frame) = shared::FrameBuf::from_slice(&buf[..len]) else {
                    continue;
                };
                let Some(ch) = LINK_TX.get(links::index(link)) else {
                    continue;
                };
                if with_timeout(Duration::from_secs(2), ch.send(frame))
                    .await
                    .is_err()
                {
                    log::warn!("link {link:?} stalled; frame dropped");
                }
            }
            while let Some(action) = NODE.lock(|c| c.borrow_mut().as_mut()?.poll_action()) {
                progressed = true;
                self.act(action).await;
            }
            while let Some(event) = NODE.lock(|c| c.borrow_mut().as_mut()?.poll_event()) {
                progressed = true;
                self.on_event(event, ota).await;
            }
            while let Some(line) = NODE.lock(|c| c.borrow_mut().as_mut()?.poll_log()) {
                match line.level {
                    LogLevel::Warn => log::warn!("{}", line.text),
                    LogLevel::Info => log::info!("{}", line.text),
                    LogLevel::Debug => log::debug!("{}", line.text),
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Carries out one action. The routing is a plain function so that the many
    /// 1 KiB variants do not each take a slot in the node loop's stack frame.
    async fn act(&mut self, action: Action) {
        let routed = self.route(action);
        if let Some(cmd) = routed.mqtt {
            MQTT_CMD.send(cmd).await;
        }
        if let Some(cmd) = routed.wifi {
            WIFI_CMD.send(cmd).await;
        }
        if routed.restart {
            log::info!("restart requested");
            Timer::after(Duration::from_millis(500)).await;
            esp_hal::system::software_reset();
        }
    }

    #[inline(never)]
    fn route(&mut self, action: Action) -> Routed {
        let mut r = Routed {
            mqtt: None,
            wifi: None,
            restart: false,
        };
        match action {
            Action::Scan => r.wifi = Some(WifiCmd::Scan(None)),
            Action::ScanChannel(channel) => r.wifi = Some(WifiCmd::Scan(Some(channel))),
            Action::Associate {
                bssid,
                ssid,
                password,
                channel,
            } => {
                self.parent_bssid = Some(bssid);
                r.wifi = Some(WifiCmd::Associate {
                    bssid,
                    ssid,
                    password,
                    channel,
                });
            }
            Action::Disassociate => {
                LINK_CLOSE[0].signal(());
                r.mqtt = Some(MqttCmd::Disconnect);
                r.wifi = Some(WifiCmd::Disassociate);
            }
            Action::ConnectMqtt {
                client_id,
                will_topic,
            } => {
                r.mqtt = Some(MqttCmd::Connect {
                    client_id,
                    will_topic,
                })
            }
            Action::DisconnectMqtt => r.mqtt = Some(MqttCmd::Disconnect),
            Action::Subscribe { filter } => r.mqtt = Some(MqttCmd::Subscribe { filter }),
            Action::Publish(p) => r.mqtt = Some(MqttCmd::Publish(p)),
            Action::OpenParentLink => {
                match self
                    .parent_bssid
                    .and_then(|b| identity::mesh_chip_id(&b, self.mesh_key))
                {
                    Some(parent) => PARENT_OPEN.signal(addr::ap_gateway(parent)),
                    None => with_node(|node, now| {
                        node.handle_link_closed(now, mqttmesh_core::LinkId::Parent)
                    }),
                }
            }
            Action::CloseLink(link) => {
                if let Some(close) = LINK_CLOSE.get(links::index(link)) {
                    close.signal(());
                }
            }
            Action::OpenAp {
                ssid,
                channel,
                max_children,
                ..
            } => {
                r.wifi = Some(WifiCmd::OpenAp {
                    ssid,
                    channel,
                    max_children,
                })
            }
            Action::CloseAp => {
                shared::AP_OPEN.store(false, core::sync::atomic::Ordering::Relaxed);
                for close in &LINK_CLOSE[1..] {
                    close.signal(());
                }
                r.wifi = Some(WifiCmd::CloseAp);
            }
            // No beacon hints on the chip yet (docs/PROTOCOL.md "Beacon hints").
            Action::AdmitStations(_) => {}
            Action::Restart => r.restart = true,
        }
        r
    }

    async fn on_event(&mut self, event: Event, ota: &mut Option<ota::Ota>) {
        match event {
            Event::Message { subtopic, payload } => self.on_message(&subtopic, &payload),
            Event::Ota {
                exchange,
                command,
                payload,
            } => {
                if handle_ota(ota, exchange, &command, &payload) {
                    log::info!("new firmware installed; restarting into it");
                    // Let the replies leave first.
                    Timer::after(Duration::from_secs(2)).await;
                    esp_hal::system::software_reset();
                }
            }
            Event::Connected => {
                log::info!("connected to the broker");
                if let Some(o) = ota.as_mut() {
                    o.confirm();
                }
            }
            Event::Disconnected => log::info!("lost the path to the broker"),
        }
    }
}

/// What one action asks of the tasks.
struct Routed {
    mqtt: Option<MqttCmd>,
    wifi: Option<WifiCmd>,
    restart: bool,
}

/// Feeds one OTA message to the receivers and publishes their replies; true when the
/// new image is installed.
#[inline(never)]
fn handle_ota(
    ota: &mut Option<ota::Ota>,
    exchange: mqttmesh_core::node::OtaExchange,
    command: &str,
    payload: &[u8],
) -> bool {
    let Some(ota) = ota.as_mut() else {
        log::warn!("OTA message ignored: OTA unavailable on this boot");
        return false;
    };
    ota.handle(exchange, command, payload, |reply| {
        let r =
            with_node(|node, _| Some(node.publish(&reply.subtopic, &reply.payload, MsgType::Qos1)));
        if let Some(Err(e)) = r {
            log::warn!("cannot answer {}: {e}", reply.subtopic);
        }
    })
}
