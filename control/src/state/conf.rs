//! `agent.conf`: an ordered `key=value` file. Comments (`#`) and blank
//! lines are kept when the file is rewritten; keys are `[A-Za-z0-9_.]+`
//! and appear once; whitespace around keys and values is trimmed.

use std::path::Path;

use super::{Result, StateError, atomic};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A comment or blank line, kept verbatim.
    Other(String),
    Entry {
        key: String,
        value: String,
    },
}

/// The parsed contents of `agent.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConf {
    lines: Vec<Line>,
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("empty key")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        Some("key may hold only letters, digits, `_` and `.`")
    } else {
        None
    }
}

impl AgentConf {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse the text of `agent.conf`; `path` is used in error messages.
    ///
    /// # Errors
    /// [`StateError::Syntax`] for the first line without `=`, with an empty
    /// or badly formed key, or repeating a key.
    pub fn parse(text: &str, path: &Path) -> Result<AgentConf> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| StateError::Syntax {
                path: path.to_owned(),
                line,
                message,
            };
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                lines.push(Line::Other(raw.to_owned()));
                continue;
            }
            let Some((k, v)) = t.split_once('=') else {
                return Err(err(format!("expected `key=value`, found {t:?}")));
            };
            let (key, value) = (k.trim(), v.trim());
            if let Some(p) = key_problem(key) {
                return Err(err(format!("{p} in {t:?}")));
            }
            let dup = lines
                .iter()
                .any(|l| matches!(l, Line::Entry { key: k2, .. } if k2 == key));
            if dup {
                return Err(err(format!("duplicate key `{key}`")));
            }
            lines.push(Line::Entry {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
        Ok(AgentConf { lines })
    }

    /// Read `path`; a missing file is an empty configuration.
    ///
    /// # Errors
    /// I/O errors, non-UTF-8 text, or any [`AgentConf::parse`] error.
    pub fn load(path: &Path) -> Result<AgentConf> {
        match atomic::read_file(path)? {
            None => Ok(AgentConf::new()),
            Some(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| StateError::invalid(path, "not UTF-8 text"))?;
                AgentConf::parse(&text, path)
            }
        }
    }

    /// Write atomically with mode 0644.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        atomic::write_atomic(path, self.to_text().as_bytes(), 0o644)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            Line::Entry { key: k, value } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Set `key` to `value`, in place if present, else appended.
    ///
    /// # Errors
    /// [`StateError::InvalidSetting`] for a bad key or a value holding a
    /// line break or surrounding whitespace (it would not read back).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |why| {
            Err(StateError::InvalidSetting {
                key: key.to_owned(),
                why,
            })
        };
        if let Some(p) = key_problem(key) {
            return bad(p);
        }
        if value.contains(['\n', '\r']) {
            return bad("value must not contain a line break");
        }
        if value.trim() != value {
            return bad("value must not start or end with whitespace");
        }
        for l in &mut self.lines {
            if let Line::Entry { key: k, value: v } = l
                && k == key
            {
                *v = value.to_owned();
                return Ok(());
            }
        }
        self.lines.push(Line::Entry {
            key: key.to_owned(),
            value: value.to_owned(),
        });
        Ok(())
    }

    /// Remove `key`; returns its old value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self
            .lines
            .iter()
            .position(|l| matches!(l, Line::Entry { key: k, .. } if k == key))?;
        match self.lines.remove(i) {
            Line::Entry { value, .. } => Some(value),
            Line::Other(_) => None,
        }
    }

    /// Every `(key, value)` in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { key, value } => Some((key.as_str(), value.as_str())),
            Line::Other(_) => None,
        })
    }

    /// The file text: comments and blank lines as read, entries as
    /// `key=value`, one per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Other(raw) => s.push_str(raw),
                Line::Entry { key, value } => {
                    s.push_str(key);
                    s.push('=');
                    s.push_str(value);
                }
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/opt/guardfs/agent/etc/agent.conf";

    #[test]
    fn round_trip_keeps_comments_and_order() {
        let text = "# GuardFS agent\n\nrun_dir = /run/x\nlog_dir=/var/log/x\n  # trailing\n";
        let mut c = AgentConf::parse(text, Path::new(P)).unwrap();
        assert_eq!(c.get("run_dir"), Some("/run/x"));
        assert_eq!(c.get("log_dir"), Some("/var/log/x"));
        assert_eq!(c.get("nope"), None);
        c.set("log_dir", "/tmp/l").unwrap();
        c.set("new.key_1", "v=1").unwrap();
        let out = c.to_text();
        assert_eq!(
            out,
            "# GuardFS agent\n\nrun_dir=/run/x\nlog_dir=/tmp/l\n  # trailing\nnew.key_1=v=1\n"
        );
        let again = AgentConf::parse(&out, Path::new(P)).unwrap();
        assert_eq!(again, c);
        assert_eq!(c.entries().count(), 3);
        assert_eq!(c.remove("run_dir").as_deref(), Some("/run/x"));
        assert_eq!(c.get("run_dir"), None);
    }

    #[test]
    fn parse_errors_have_file_and_line() {
        for (text, line, what) in [
            ("a=1\nnoequals\n", 2, "expected `key=value`"),
            ("# c\n=v\n", 2, "empty key"),
            ("a=1\n\nb-c=2\n", 3, "only letters"),
            ("a=1\nb=2\na=3\n", 3, "duplicate key `a`"),
        ] {
            let e = AgentConf::parse(text, Path::new(P)).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(&format!("{P}: line {line}: ")), "{s}");
            assert!(s.contains(what), "{s}");
        }
    }

    #[test]
    fn set_validates() {
        let mut c = AgentConf::new();
        assert!(c.set("a", "x\ny").is_err());
        assert!(c.set("a", " x").is_err());
        assert!(c.set("", "x").is_err());
        assert!(c.set("a b", "x").is_err());
        assert_eq!(c, AgentConf::new());
    }

    #[test]
    fn load_save() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.conf");
        assert_eq!(AgentConf::load(&p).unwrap(), AgentConf::new());
        let mut c = AgentConf::new();
        c.set("run_dir", "/run/g").unwrap();
        c.save(&p).unwrap();
        assert_eq!(AgentConf::load(&p).unwrap(), c);
        std::fs::write(&p, b"\xff\xfe").unwrap();
        let e = AgentConf::load(&p).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
