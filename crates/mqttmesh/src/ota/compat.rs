//! The original exchange from the sender's side (`../shared/spec/compat.md` "OTA over
//! MQTT"), as the original upload script drives it — `start`, the `ota/erase` answers
//! name the participants, one base64 chunk at a time at decimal offsets until every
//! participant answered its MD5, `check`, `flash` — with what the script lacked: a chunk
//! that a node did not acknowledge in time (or acknowledged with the wrong MD5) is sent
//! again to that node alone, and a node that stays silent is dropped instead of
//! stalling everyone.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use tokio::time::Instant;

use super::firmware::Firmware;
use super::progress::Outcome;
use super::run::{Run, Targets};
use crate::keys::hex;

/// Bytes per chunk the original script sends: 1024 base64 characters, the most a node
/// takes.
pub const CHUNK: usize = 768;

/// Runs the whole exchange; every participant ends with an outcome in `run`.
pub async fn upload(run: &mut Run, fw: &Firmware, chunk: usize) -> Result<()> {
    let image = &fw.bytes;
    let start = format!(
        "md5:{},len:{}",
        STANDARD.encode(Md5::digest(image)),
        image.len()
    );
    run.progress.phase("start (nodes erase their update slot)");
    let in_prefix = run.bus.in_prefix.clone();
    let participants = run
        .discover(
            async |bus, levels| {
                for level in levels {
                    let topic = format!("{in_prefix}ota/{level}/start");
                    bus.publish(&topic, start.as_bytes()).await?;
                }
                Ok(())
            },
            |_, msg| (msg.sub == "ota/erase").then_some(true),
        )
        .await?;
    if participants.is_empty() {
        if !run.any_ended() {
            bail!(
                "no node answered the start within {} s: is --id {} right? are the nodes \
                 online? try `mqttmesh topology`",
                run.opts.discover.as_secs(),
                fw.target()
            );
        }
        return Ok(());
    }
    let mut active = participants.clone();
    let chunks = image.len().div_ceil(chunk);
    run.progress
        .phase(&format!("{chunks} chunks of {chunk} bytes, one at a time"));
    for offset in (0..image.len()).step_by(chunk) {
        let data = &image[offset..image.len().min(offset + chunk)];
        send_chunk(run, &fw.target(), &mut active, offset, data).await?;
        if active.is_empty() {
            return Ok(());
        }
    }
    run.progress.phase("check (MD5 of the whole image)");
    check(run, &mut active).await?;
    if active.is_empty() {
        return Ok(());
    }
    run.progress
        .phase("flash, waiting for the nodes to come back");
    let levels = levels(&run.targets, &participants, &active);
    for level in &levels {
        run.bus
            .publish(&format!("{in_prefix}ota/{level}/flash"), &[])
            .await?;
    }
    run.await_boot(
        active,
        &fw.version,
        async |_, _| Ok(()),
        |msg| {
            (msg.sub == "ota/flash" && msg.payload == b"Failed")
                .then(|| Outcome::Failed("refused to flash (its image does not check out)".into()))
        },
    )
    .await
}

/// Where to publish a command for every active participant: the firmware ID while all
/// participants are active, else each one's ID (so a dropped node never gets `flash`).
fn levels(
    targets: &Targets,
    participants: &BTreeSet<String>,
    active: &BTreeSet<String>,
) -> Vec<String> {
    match targets {
        Targets::Firmware(fw) if participants == active => vec![fw.clone()],
        _ => active.iter().cloned().collect(),
    }
}

/// Sends one chunk and waits until every active participant acknowledged it with the
/// right MD5, resending to each node that did not.
async fn send_chunk(
    run: &mut Run,
    fw_level: &str,
    active: &mut BTreeSet<String>,
    offset: usize,
    data: &[u8],
) -> Result<()> {
    let in_prefix = run.bus.in_prefix.clone();
    let expected = hex(&Md5::digest(data));
    let payload = STANDARD.encode(data);
    let everyone = match &run.targets {
        Targets::Firmware(_) => vec![fw_level.to_string()],
        Targets::Nodes(_) => active.iter().cloned().collect(),
    };
    for level in &everyone {
        let topic = format!("{in_prefix}ota/{level}/{offset}");
        run.bus.publish(&topic, payload.as_bytes()).await?;
    }
    let mut pending: BTreeMap<String, u32> = active.iter().map(|n| (n.clone(), 0)).collect();
    let mut deadline = Instant::now() + run.opts.timeout;
    while !pending.is_empty() {
        run.progress.tick();
        let Some(msg) = run.bus.recv_until(deadline).await? else {
            for (node, tries) in pending.iter_mut() {
                *tries += 1;
                run.progress
                    .note(node, &format!("resend {tries} at {offset}"));
            }
            let (gone, again) = give_up(&mut pending, run.opts.retries);
            for node in gone {
                active.remove(&node);
                let retries = run.opts.retries;
                let why = format!("no MD5 for the chunk at {offset} after {retries} resends");
                run.end(&node, Outcome::Unreachable(why));
            }
            for node in again {
                let topic = format!("{in_prefix}ota/{node}/{offset}");
                run.bus.publish(&topic, payload.as_bytes()).await?;
            }
            deadline = Instant::now() + run.opts.timeout;
            continue;
        };
        let answers = msg
            .sub
            .strip_prefix("ota/md5/")
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            == Some(offset);
        if !answers || !pending.contains_key(&msg.node) {
            continue;
        }
        if msg.text().trim().eq_ignore_ascii_case(&expected) {
            pending.remove(&msg.node);
            run.progress.set(&msg.node, (offset + data.len()) as u64);
            continue;
        }
        // The chunk arrived damaged: send it again to that node right away.
        tracing::warn!(node = msg.node, offset, got = msg.text(), "MD5 mismatch");
        let tries = pending.entry(msg.node.clone()).or_default();
        *tries += 1;
        if *tries > run.opts.retries {
            pending.remove(&msg.node);
            active.remove(&msg.node);
            let why = format!("MD5 of the chunk at {offset} wrong after every resend");
            run.end(&msg.node, Outcome::Failed(why));
        } else {
            let topic = format!("{in_prefix}ota/{}/{offset}", msg.node);
            run.bus.publish(&topic, payload.as_bytes()).await?;
        }
    }
    Ok(())
}

/// Splits `pending` into nodes past `retries` (removed) and nodes to ask again.
fn give_up(pending: &mut BTreeMap<String, u32>, retries: u32) -> (Vec<String>, Vec<String>) {
    let gone: Vec<String> = pending
        .iter()
        .filter(|(_, &t)| t > retries)
        .map(|(n, _)| n.clone())
        .collect();
    for node in &gone {
        pending.remove(node);
    }
    (gone, pending.keys().cloned().collect())
}

/// `check` with an empty payload: each node compares the MD5 of what it holds with the
/// one `start` announced. Nodes that fail or stay silent leave `active`.
async fn check(run: &mut Run, active: &mut BTreeSet<String>) -> Result<()> {
    let in_prefix = run.bus.in_prefix.clone();
    let mut pending: BTreeMap<String, u32> = active.iter().map(|n| (n.clone(), 0)).collect();
    for node in pending.keys() {
        run.bus
            .publish(&format!("{in_prefix}ota/{node}/check"), &[])
            .await?;
    }
    let mut deadline = Instant::now() + run.opts.timeout;
    while !pending.is_empty() {
        let Some(msg) = run.bus.recv_until(deadline).await? else {
            pending.values_mut().for_each(|t| *t += 1);
            let (gone, again) = give_up(&mut pending, run.opts.retries);
            for node in gone {
                active.remove(&node);
                run.end(&node, Outcome::Unreachable("no answer to check".into()));
            }
            for node in again {
                let topic = format!("{in_prefix}ota/{node}/check");
                run.bus.publish(&topic, &[]).await?;
            }
            deadline = Instant::now() + run.opts.timeout;
            continue;
        };
        if msg.sub != "ota/check" || !pending.contains_key(&msg.node) {
            continue;
        }
        match msg.payload.as_slice() {
            b"MD5 Passed" => {
                pending.remove(&msg.node);
                run.progress.note(&msg.node, "MD5 passed");
            }
            b"MD5 Failed" => {
                pending.remove(&msg.node);
                active.remove(&msg.node);
                let why = "MD5 check failed: the image in its flash differs";
                run.end(&msg.node, Outcome::Failed(why.into()));
            }
            // Someone's link test (`check` with text): not ours.
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_nodes_are_dropped_after_their_retries() {
        let mut pending: BTreeMap<String, u32> =
            [("A".to_string(), 3), ("B".to_string(), 1)].into();
        let (gone, again) = give_up(&mut pending, 2);
        assert_eq!(
            (gone, again),
            (vec!["A".to_string()], vec!["B".to_string()])
        );
        let all: BTreeSet<String> = ["A".to_string(), "B".to_string()].into();
        let one: BTreeSet<String> = ["B".to_string()].into();
        let fw = Targets::Firmware("1337".into());
        assert_eq!(levels(&fw, &all, &all), vec!["1337".to_string()]);
        assert_eq!(levels(&fw, &all, &one), vec!["B".to_string()]);
    }
}
