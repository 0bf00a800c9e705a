//! Audit lines in CTE's shape.
//!
//! ```text
//! CGP2601I: [SecFS, 0] [AUDIT] Policy[web] User[alice,uid=1000,gid=1000\alice,dba\] Process[/usr/bin/cat] Action[read_file] Res[/data/db/t1.dat] Key[k1] Effect[PERMIT Code (1U,2M)]
//! ```
//!
//! * Level: `[AUDIT]` for a permit, `[ALARM]` for a deny (CTE's level for
//!   what should not be ignored).
//! * `User[name,uid=U,gid=G\groups\]`: the user name (the uid in digits when
//!   unknown), uid, primary gid, then the group names between backslashes
//!   (the gids in digits when no names are known).
//! * `Action[...]`: [`Action::audit_name`](crate::Action::audit_name).
//! * `Res[...]`: the GuardPoint path joined with the request's path.
//! * `Key[...]`: the key name, `clear_key`, `default` (no key rules), or
//!   empty when no key rule covers the resource.
//! * `Effect[PERMIT|DENIED Code (...)]`: the verdict after learn mode and the
//!   match code.
//! * Trailing tags: ` [LEARN MODE: WOULD DENY]` when learn mode turned a
//!   deny into a permit, ` [BROWSING]` when a deny rule's `browsing` let a
//!   browse action through, ` [BAD REQUEST]` when the request path was not
//!   normalized.
//!
//! Paths and names are escaped: control characters, `[`, `]`, `\` and bytes
//! that are not UTF-8 are written `\xNN`, so a file name cannot end a field
//! early or forge a line.

use std::fmt::{self, Write};

use crate::compile::CompiledPolicy;
use crate::eval::{Decision, KeyChoice, Outcome, Request};

/// A renderable audit line; format it with `{}` (nothing is allocated until
/// then, and only by the writer).
#[derive(Debug, Clone, Copy)]
pub struct AuditLine<'a> {
    policy: &'a CompiledPolicy,
    request: &'a Request<'a>,
    guard_point: &'a [u8],
    decision: &'a Decision,
}

impl<'a> AuditLine<'a> {
    /// The line for `decision`, made by `policy` for `request` on the
    /// GuardPoint mounted at `guard_point`.
    pub fn new(
        policy: &'a CompiledPolicy,
        request: &'a Request<'a>,
        guard_point: &'a [u8],
        decision: &'a Decision,
    ) -> AuditLine<'a> {
        AuditLine {
            policy,
            request,
            guard_point,
            decision,
        }
    }
}

/// Write bytes with the escaping described in the module doc.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || matches!(c, '[' | ']' | '\\') {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    write!(f, "\\x{b:02x}")?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for AuditLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.decision;
        let r = self.request;
        let level = if d.is_permit() { "AUDIT" } else { "ALARM" };
        write!(f, "CGP2601I: [SecFS, 0] [{level}] Policy[")?;
        write_escaped(f, self.policy.name().as_bytes())?;
        f.write_str("] User[")?;
        match r.user_name {
            Some(name) => write_escaped(f, name.as_bytes())?,
            None => write!(f, "{}", r.uid)?,
        }
        write!(f, ",uid={},gid={}\\", r.uid, r.gid)?;
        if r.group_names.is_empty() {
            write!(f, "{}", r.gid)?;
            for g in r.groups.iter().filter(|g| **g != r.gid) {
                write!(f, ",{g}")?;
            }
        } else {
            for (i, name) in r.group_names.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write_escaped(f, name.as_bytes())?;
            }
        }
        f.write_str("\\] Process[")?;
        write_escaped(f, r.exe.unwrap_or_default())?;
        write!(f, "] Action[{}] Res[", r.action.audit_name())?;
        let gp = self
            .guard_point
            .strip_suffix(b"/")
            .unwrap_or(self.guard_point);
        write_escaped(f, gp)?;
        if r.path != b"/" || gp.is_empty() {
            write_escaped(f, r.path)?;
        }
        f.write_str("] Key[")?;
        let key = match d.key() {
            KeyChoice::Named(_) if d.policy_serial() != self.policy.serial() => "?",
            k => self.policy.key_label(k),
        };
        write_escaped(f, key.as_bytes())?;
        let verdict = if d.is_permit() { "PERMIT" } else { "DENIED" };
        write!(f, "] Effect[{verdict} Code ({})]", d.code())?;
        if d.would_deny() {
            f.write_str(" [LEARN MODE: WOULD DENY]")?;
        }
        if d.browsing() {
            f.write_str(" [BROWSING]")?;
        }
        if d.outcome() == Outcome::BadRequest {
            f.write_str(" [BAD REQUEST]")?;
        }
        Ok(())
    }
}

/// The alarm for a file whose bytes do not match its key rule: a header
/// for another key where the rule names one, or no header at all. The
/// file is refused (`EIO`), never decrypted with the key it names.
///
/// ```text
/// CGP2602E: [SecFS, 0] [ALARM] Policy[web] Res[/data/hr/a.txt] Key[hr_key] Found[db_key] Effect[DENIED EIO: header names another key]
/// ```
///
/// `Key[...]` is the key the rule requires; `Found[...]` what the lower
/// file carries (a key name, or `none` for a file without a header).
#[derive(Debug, Clone, Copy)]
pub struct KeyMismatchLine<'a> {
    /// The loaded policy's name (empty when none is loaded).
    pub policy: &'a str,
    pub guard_point: &'a [u8],
    /// The resource, relative to the GuardPoint, written absolute.
    pub path: &'a [u8],
    pub required: &'a str,
    pub found: &'a str,
    /// Why the file is refused, in a few words.
    pub why: &'a str,
}

impl fmt::Display for KeyMismatchLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CGP2602E: [SecFS, 0] [ALARM] Policy[")?;
        write_escaped(f, self.policy.as_bytes())?;
        f.write_str("] Res[")?;
        let gp = self
            .guard_point
            .strip_suffix(b"/")
            .unwrap_or(self.guard_point);
        write_escaped(f, gp)?;
        if self.path != b"/" || gp.is_empty() {
            write_escaped(f, self.path)?;
        }
        f.write_str("] Key[")?;
        write_escaped(f, self.required.as_bytes())?;
        f.write_str("] Found[")?;
        write_escaped(f, self.found.as_bytes())?;
        f.write_str("] Effect[DENIED EIO: ")?;
        write_escaped(f, self.why.as_bytes())?;
        f.write_str("]")
    }
}

#[cfg(test)]
mod key_mismatch_tests {
    use super::KeyMismatchLine;

    #[test]
    fn names_path_found_and_required_keys_escaped() {
        let l = KeyMismatchLine {
            policy: "p",
            guard_point: b"/data/",
            path: b"/hr/a]b",
            required: "hr_key",
            found: "db_key",
            why: "header names another key",
        };
        assert_eq!(
            l.to_string(),
            "CGP2602E: [SecFS, 0] [ALARM] Policy[p] Res[/data/hr/a\\x5db] Key[hr_key] \
             Found[db_key] Effect[DENIED EIO: header names another key]"
        );
    }
}
