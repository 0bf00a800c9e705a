//! The hardware signature (CTE's hardware association): a SHA-256 over
//! what identifies this machine — `/etc/machine-id`, the DMI product UUID,
//! the MAC addresses of its network interfaces. A clone of the VM gets a
//! new machine id or new MACs, so its signature differs and vmd refuses to
//! contact the key manager or use keys until the host is registered again.
//!
//! `hwsig_extra_file` in agent.conf names one more file mixed in (for
//! containers whose machine id is shared, and for tests).

use std::path::Path;

/// The signature of this machine, hex.
pub fn current(extra: Option<&Path>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |label: &str, bytes: &[u8]| {
        ctx.update(label.as_bytes());
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(bytes);
    };
    part(
        "machine-id",
        std::fs::read("/etc/machine-id")
            .unwrap_or_default()
            .trim_ascii(),
    );
    part(
        "product_uuid",
        std::fs::read("/sys/class/dmi/id/product_uuid")
            .unwrap_or_default()
            .trim_ascii(),
    );
    let mut macs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != "lo")
        // Physical and virtio devices only: bridges and veths come and go.
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
        .map(|s| s.trim().to_owned())
        .collect();
    macs.sort();
    part("macs", macs.join(",").as_bytes());
    if let Some(p) = extra {
        part("extra", &std::fs::read(p).unwrap_or_default());
    }
    hex::encode(ctx.finish().as_ref())
}
