//! Sizes as people write them: `512 KiB`, `1.5 MiB`, and parsing `--budget 2MB`.

use crate::error::{Error, Result};

/// Formats a byte count with binary units (`KiB`, `MiB`, ...).
pub fn bytes(n: usize) -> String {
    bytesize::ByteSize(n as u64).display().iec().to_string()
}

/// Parses a size such as `512KiB`, `1.5MB`, `2 MiB` or a plain byte count.
pub fn parse_bytes(s: &str) -> Result<usize> {
    s.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64() as usize).map_err(|e| {
        Error::Plan(format!("cannot read size '{s}': {e} (try 512KiB, 1.5MB or 2000000)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_in_human_units() {
        assert_eq!(parse_bytes("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_bytes("1.5MB").unwrap(), 1_500_000);
        assert_eq!(parse_bytes("2000").unwrap(), 2000);
        assert!(parse_bytes("lots").is_err());
        assert!(bytes(1536).contains("KiB"));
    }
}
