//! The records an evdev device (`/dev/input/event*`) returns on read: Linux's
//! `struct input_event` on 64-bit targets, 24 bytes each, fields in native byte
//! order. init watches the ACPI power button and stops the app on a press.
//! The binary asserts at compile time that libc's layout is this one.

/// Size of one `struct input_event` (a 16-byte `timeval`, then the fields).
pub const EVENT_SIZE: usize = 24;
/// Offset of `type` (u16).
pub const TYPE_AT: usize = 16;
/// Offset of `code` (u16).
pub const CODE_AT: usize = 18;
/// Offset of `value` (i32).
pub const VALUE_AT: usize = 20;
/// Event type of key events.
pub const EV_KEY: u16 = 1;
/// Key code of the power key.
pub const KEY_POWER: u16 = 116;
/// `value` of a key press (0 is a release, 2 an autorepeat).
pub const KEY_PRESSED: i32 = 1;

fn u16_at(ev: &[u8], at: usize) -> Option<u16> {
    let b = ev.get(at..at + 2)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

fn i32_at(ev: &[u8], at: usize) -> Option<i32> {
    let b = ev.get(at..at + 4)?;
    Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether one record is a KEY_POWER press. A record shorter than
/// [`EVENT_SIZE`] is none.
pub fn is_power_press(ev: &[u8]) -> bool {
    ev.len() >= EVENT_SIZE
        && u16_at(ev, TYPE_AT) == Some(EV_KEY)
        && u16_at(ev, CODE_AT) == Some(KEY_POWER)
        && i32_at(ev, VALUE_AT) == Some(KEY_PRESSED)
}

/// Whether the records read from a device hold a KEY_POWER press (a trailing
/// partial record is ignored).
pub fn has_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(is_power_press)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(type_: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut ev = [0u8; EVENT_SIZE];
        ev[..8].copy_from_slice(&1i64.to_ne_bytes());
        ev[8..16].copy_from_slice(&2i64.to_ne_bytes());
        ev[TYPE_AT..TYPE_AT + 2].copy_from_slice(&type_.to_ne_bytes());
        ev[CODE_AT..CODE_AT + 2].copy_from_slice(&code.to_ne_bytes());
        ev[VALUE_AT..].copy_from_slice(&value.to_ne_bytes());
        ev
    }

    #[test]
    fn power_key_events() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 2)));
        assert!(!is_power_press(&event(EV_KEY, 115, 1)));
        assert!(!is_power_press(&event(0, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 1)[..23]));
    }

    #[test]
    fn a_read_holds_several_records() {
        let mut buf = Vec::new();
        buf.extend(event(4, 4, 0x66)); // EV_MSC MSC_SCAN
        buf.extend(event(0, 0, 0)); // EV_SYN
        assert!(!has_power_press(&buf));
        buf.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(has_power_press(&buf));
        // Only whole records count, at record boundaries.
        assert!(!has_power_press(&buf[1..]));
        assert!(!has_power_press(&buf[..buf.len() - 1]));
    }
}
