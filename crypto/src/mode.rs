//! The content modes a GuardPoint can use for new files.

use std::fmt;
use std::str::FromStr;

/// How a file's contents are transformed. The mode of an existing file is
/// recorded in its header; the mode of a GuardPoint only decides new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// AES-256-XTS per 4 KiB unit, length preserving. The default.
    #[default]
    Xts,
    /// CTE's enhanced mode: AES-256-CBC over 512-byte segments with
    /// per-segment IVs and CS1 ciphertext stealing, length preserving.
    CbcCs1,
    /// AES-256-GCM per unit: a 12-byte nonce and 16-byte tag in every 4 KiB
    /// lower unit, so tampering and unit swaps are detected.
    Gcm,
    /// No transformation and no header: access control only (CTE's
    /// `clear_key`). Lower files are the plaintext files themselves.
    Clear,
}

impl Mode {
    /// Every mode, in header-code order.
    pub const ALL: [Mode; 4] = [Mode::Xts, Mode::CbcCs1, Mode::Gcm, Mode::Clear];

    /// The name used on command lines, in policies and in FORMAT.md.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Xts => "xts",
            Mode::CbcCs1 => "cbc-cs1",
            Mode::Gcm => "gcm",
            Mode::Clear => "clear",
        }
    }

    /// The byte stored in the header's mode field. `Clear` files carry no
    /// header, so it has no code.
    pub fn header_code(self) -> Option<u8> {
        match self {
            Mode::Xts => Some(1),
            Mode::CbcCs1 => Some(2),
            Mode::Gcm => Some(3),
            Mode::Clear => None,
        }
    }

    /// The mode a header's mode byte names, if any.
    pub fn from_header_code(code: u8) -> Option<Mode> {
        match code {
            1 => Some(Mode::Xts),
            2 => Some(Mode::CbcCs1),
            3 => Some(Mode::Gcm),
            _ => None,
        }
    }

    /// Whether lower files of this mode start with a header.
    pub fn has_header(self) -> bool {
        self != Mode::Clear
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is not one of `xts`, `cbc-cs1`, `gcm`, `clear`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: expected one of xts, cbc-cs1, gcm, clear")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "xts" => Ok(Mode::Xts),
            "cbc-cs1" | "cbc_cs1" => Ok(Mode::CbcCs1),
            "gcm" => Ok(Mode::Gcm),
            "clear" | "clear_key" => Ok(Mode::Clear),
            _ => Err(ParseModeError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>().unwrap(), m);
            if let Some(c) = m.header_code() {
                assert_eq!(Mode::from_header_code(c), Some(m));
            }
        }
        assert_eq!("CBC_CS1".parse::<Mode>().unwrap(), Mode::CbcCs1);
        assert!("aes".parse::<Mode>().is_err());
        assert_eq!(Mode::from_header_code(0), None);
        assert_eq!(Mode::from_header_code(4), None);
    }
}
