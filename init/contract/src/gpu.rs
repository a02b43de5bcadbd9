//! NVIDIA GPU detection and the driver's device numbers, from kernel text:
//! `/proc/bus/pci/devices` (one line per PCI function: bus/devfn, then
//! vendor and device as eight hex digits, …) and `/proc/devices` (the
//! character and block majors). The vendor and device ids come from the
//! VMM, so the text is read as outside input: bounded, never trusted to be
//! well formed.

/// NVIDIA's PCI vendor id.
pub const NVIDIA_VENDOR: u16 = 0x10de;

/// The driver modules, in load order, with their parameters.
pub const DRIVER_STACK: [(&str, &str); 4] = [
    ("nvidia", ""),
    ("nvidia_uvm", ""),
    ("nvidia_modeset", ""),
    ("nvidia_drm", "modeset=1"),
];

/// Most lines read from either file.
const MAX_LINES: usize = 4096;

/// How many PCI functions of `/proc/bus/pci/devices` are NVIDIA's.
pub fn nvidia_functions(proc_pci_devices: &str) -> usize {
    proc_pci_devices
        .lines()
        .take(MAX_LINES)
        .filter_map(|l| l.split('\t').nth(1))
        .filter(|id| id.len() == 8 && id.is_char_boundary(4))
        .filter_map(|id| u16::from_str_radix(&id[..4], 16).ok())
        .filter(|v| *v == NVIDIA_VENDOR)
        .count()
}

/// The character-device major registered under `name` in `/proc/devices`.
pub fn char_major(proc_devices: &str, name: &str) -> Option<u32> {
    proc_devices
        .lines()
        .take(MAX_LINES)
        .skip_while(|l| l.trim() != "Character devices:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Block devices:"))
        .filter_map(|l| l.trim_start().split_once(char::is_whitespace))
        .find(|(_, n)| n.trim() == name)
        .and_then(|(m, _)| m.trim().parse().ok())
}

/// A device node the driver needs: path, major, minor.
pub type Node = (String, u32, u32);

/// The nodes for `gpus` GPUs, given the majors the driver registered: the
/// control node and one per GPU on the frontend major (minors 255 and 0..),
/// modeset on minor 254, and UVM's two on its own major.
pub fn nodes(gpus: usize, frontend: u32, uvm: Option<u32>) -> Vec<Node> {
    let mut out = vec![
        ("/dev/nvidiactl".to_string(), frontend, 255),
        ("/dev/nvidia-modeset".to_string(), frontend, 254),
    ];
    for i in 0..gpus.min(254) {
        out.push((format!("/dev/nvidia{i}"), frontend, i as u32));
    }
    if let Some(m) = uvm {
        out.push(("/dev/nvidia-uvm".into(), m, 0));
        out.push(("/dev/nvidia-uvm-tools".into(), m, 1));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PCI: &str = "0000\t80861237\t0\t0\n\
        0008\t10de2330\t2b\tfe000000\n\
        0009\t10de22a3\t2c\t0\n\
        0010\t1af41000\t0\n";

    #[test]
    fn nvidia_functions_are_counted_from_the_vendor_field() {
        assert_eq!(nvidia_functions(PCI), 2);
        assert_eq!(nvidia_functions("0000\t80861237\t0\n"), 0);
        assert_eq!(nvidia_functions(""), 0);
        assert_eq!(nvidia_functions("x\t10de\n\t\n\t10deé123\n"), 0);
    }

    #[test]
    fn majors_come_from_the_character_section_only() {
        let devices = "Character devices:\n  1 mem\n195 nvidia-frontend\n510 nvidia-uvm\n\nBlock devices:\n  7 loop\n195 nvidia-frontend\n";
        assert_eq!(char_major(devices, "nvidia-frontend"), Some(195));
        assert_eq!(char_major(devices, "nvidia-uvm"), Some(510));
        assert_eq!(char_major(devices, "loop"), None);
        assert_eq!(char_major(devices, "mem"), Some(1));
        assert_eq!(char_major("", "mem"), None);
    }

    #[test]
    fn nodes_cover_control_modeset_each_gpu_and_uvm() {
        let n = nodes(2, 195, Some(510));
        let names: Vec<&str> = n.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "/dev/nvidiactl",
                "/dev/nvidia-modeset",
                "/dev/nvidia0",
                "/dev/nvidia1",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools"
            ]
        );
        assert_eq!(n[0], ("/dev/nvidiactl".into(), 195, 255));
        assert_eq!(n[3].2, 1);
        assert_eq!(nodes(0, 195, None).len(), 2);
    }
}
