//! Human-readable sizes and their parsing (`4GiB`, `700MiB`).

use crate::error::{Error, Result};

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

/// Parses sizes such as `4GiB`, `700MiB`, `650M`, `1000000`.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| Error::invalid(format!("`{text}` is not a size (e.g. 4GiB, 700MiB)")))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(Error::invalid(format!("`{text}`: unknown unit `{other}`"))),
    };
    let bytes = number * factor as f64;
    // 2^53: beyond any medium or S3 object, and where f64 stops counting bytes exactly.
    if !bytes.is_finite() || bytes >= (1u64 << 53) as f64 {
        return Err(Error::invalid(format!(
            "`{text}` is larger than any medium holds"
        )));
    }
    if bytes.fract() != 0.0 {
        return Err(Error::invalid(format!(
            "`{text}` is not a whole number of bytes"
        )));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(super::parse_size("700MiB").unwrap(), 700 << 20);
        assert_eq!(super::parse_size("650M").unwrap(), 650_000_000);
        assert_eq!(super::parse_size("1.5KiB").unwrap(), 1536);
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("3 parsecs").is_err());
        assert!(super::parse_size("1.5").is_err());
        assert!(super::parse_size("1000000000TiB").is_err());
        assert!(super::parse_size("18446744073709551615").is_err());
    }

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
