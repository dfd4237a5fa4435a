//! Human-readable sizes and their parsing (`4GiB`, `700MiB`).

/// Formats a byte count with binary units: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Text from outside (a bundle's name, a header, a helper's message) made safe to print:
/// control characters (escape sequences, newlines, NUL) are shown escaped (`\u{1b}`,
/// `\n`), everything else as it is.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes from outside shown as text: UTF-8 where they are, with control characters and
/// invalid bytes escaped.
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_control_characters_only() {
        assert_eq!(super::escape("a\u{1b}[31mb\nc é"), "a\\u{1b}[31mb\\nc é");
        assert_eq!(super::escape_bytes(b"x\0y"), "x\\u{0}y");
    }

    #[test]
    fn formats() {
        assert_eq!(super::bytes(12), "12 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
