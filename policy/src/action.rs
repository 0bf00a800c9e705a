//! Actions: the fine-grained operations a security rule can name, the coarse
//! names (`read`, `write`, `all_ops`) that expand to sets of them, and the
//! bit set the compiled policy tests against.

use std::fmt;

/// One fine-grained action, as checked on the hot path.
///
/// Every request carries exactly one of these. The policy names match CTE's
/// (`f_rd`, `d_mkdir`, ...); [`Action::audit_name`] gives the word CTE prints
/// in the `Action[...]` field of an audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Action {
    /// `f_rd`: read file contents.
    FRd = 0,
    /// `f_wr`: write file contents (anywhere, including truncate).
    FWr,
    /// `f_wr_app`: append to a file.
    FWrApp,
    /// `f_cre`: create a file.
    FCre,
    /// `f_rm`: remove (unlink) a file.
    FRm,
    /// `f_ren`: rename a file.
    FRen,
    /// `f_link`: create a hard or symbolic link.
    FLink,
    /// `f_rd_att`: read file attributes (stat).
    FRdAtt,
    /// `f_wr_att`: change file attributes (times, size metadata, xattrs).
    FWrAtt,
    /// `f_chg_sec`: change file security (mode, owner, ACLs).
    FChgSec,
    /// `f_rd_sec`: read file security (ACLs, security xattrs).
    FRdSec,
    /// `d_rd`: list a directory.
    DRd,
    /// `d_mkdir`: create a directory.
    DMkdir,
    /// `d_rmdir`: remove a directory.
    DRmdir,
    /// `d_ren`: rename a directory.
    DRen,
    /// `d_rd_att`: read directory attributes.
    DRdAtt,
    /// `d_wr_att`: change directory attributes.
    DWrAtt,
    /// `d_chg_sec`: change directory security (mode, owner, ACLs).
    DChgSec,
    /// `key_op`: key operations performed by the agent (rekey, dataxform).
    KeyOp,
}

impl Action {
    /// Every action, in bit order.
    pub const ALL: [Action; 19] = [
        Action::FRd,
        Action::FWr,
        Action::FWrApp,
        Action::FCre,
        Action::FRm,
        Action::FRen,
        Action::FLink,
        Action::FRdAtt,
        Action::FWrAtt,
        Action::FChgSec,
        Action::FRdSec,
        Action::DRd,
        Action::DMkdir,
        Action::DRmdir,
        Action::DRen,
        Action::DRdAtt,
        Action::DWrAtt,
        Action::DChgSec,
        Action::KeyOp,
    ];

    /// The name used in policies (`f_rd`, `d_mkdir`, `key_op`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Action::FRd => "f_rd",
            Action::FWr => "f_wr",
            Action::FWrApp => "f_wr_app",
            Action::FCre => "f_cre",
            Action::FRm => "f_rm",
            Action::FRen => "f_ren",
            Action::FLink => "f_link",
            Action::FRdAtt => "f_rd_att",
            Action::FWrAtt => "f_wr_att",
            Action::FChgSec => "f_chg_sec",
            Action::FRdSec => "f_rd_sec",
            Action::DRd => "d_rd",
            Action::DMkdir => "d_mkdir",
            Action::DRmdir => "d_rmdir",
            Action::DRen => "d_ren",
            Action::DRdAtt => "d_rd_att",
            Action::DWrAtt => "d_wr_att",
            Action::DChgSec => "d_chg_sec",
            Action::KeyOp => "key_op",
        }
    }

    /// The word printed in an audit line's `Action[...]` field.
    ///
    /// CTE documents `read_dir` (`d_rd`), `remove_file` (`f_rm`),
    /// `write_file_attr` (`f_wr_att`), `write_app` (`f_wr_app`) and
    /// `create_file` (`f_cre`); the others follow the same verb_object
    /// pattern.
    pub const fn audit_name(self) -> &'static str {
        match self {
            Action::FRd => "read_file",
            Action::FWr => "write_file",
            Action::FWrApp => "write_app",
            Action::FCre => "create_file",
            Action::FRm => "remove_file",
            Action::FRen => "rename_file",
            Action::FLink => "link_file",
            Action::FRdAtt => "read_file_attr",
            Action::FWrAtt => "write_file_attr",
            Action::FChgSec => "write_file_sec",
            Action::FRdSec => "read_file_sec",
            Action::DRd => "read_dir",
            Action::DMkdir => "make_dir",
            Action::DRmdir => "remove_dir",
            Action::DRen => "rename_dir",
            Action::DRdAtt => "read_dir_attr",
            Action::DWrAtt => "write_dir_attr",
            Action::DChgSec => "write_dir_sec",
            Action::KeyOp => "key_op",
        }
    }

    /// Parse a fine action name (`f_rd`, ..., `key_op`).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of fine actions (a bit set; `Copy`, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u32);

impl ActionSet {
    /// No action.
    pub const EMPTY: ActionSet = ActionSet(0);

    /// What the coarse action `read` expands to: every action that only
    /// observes (file contents, attributes and security; directory listing
    /// and attributes).
    pub const READ: ActionSet = ActionSet(
        Action::FRd.bit()
            | Action::FRdAtt.bit()
            | Action::FRdSec.bit()
            | Action::DRd.bit()
            | Action::DRdAtt.bit(),
    );

    /// What the coarse action `write` expands to: every action that changes
    /// a file or directory (contents, names, links, attributes, security).
    pub const WRITE: ActionSet = ActionSet(
        Action::FWr.bit()
            | Action::FWrApp.bit()
            | Action::FCre.bit()
            | Action::FRm.bit()
            | Action::FRen.bit()
            | Action::FLink.bit()
            | Action::FWrAtt.bit()
            | Action::FChgSec.bit()
            | Action::DMkdir.bit()
            | Action::DRmdir.bit()
            | Action::DRen.bit()
            | Action::DWrAtt.bit()
            | Action::DChgSec.bit(),
    );

    /// What the coarse action `all_ops` expands to: `read` ∪ `write`, i.e.
    /// every file and directory action. `key_op` is not included: like
    /// CipherTrust Manager's default `key_op` rule, key operations are
    /// granted by a rule of their own.
    pub const ALL_OPS: ActionSet = ActionSet(ActionSet::READ.0 | ActionSet::WRITE.0);

    /// The actions a deny rule with `browsing` still permits: listing a
    /// directory and reading file and directory attributes.
    pub const BROWSE: ActionSet =
        ActionSet(Action::DRd.bit() | Action::DRdAtt.bit() | Action::FRdAtt.bit());

    /// The set holding one action.
    pub const fn of(action: Action) -> ActionSet {
        ActionSet(action.bit())
    }

    /// Whether `action` is in the set.
    pub const fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// An action as written in a policy: a coarse name or a fine action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionName {
    /// `read`: expands to [`ActionSet::READ`].
    Read,
    /// `write`: expands to [`ActionSet::WRITE`].
    Write,
    /// `all_ops`: expands to [`ActionSet::ALL_OPS`].
    AllOps,
    /// A fine action (`f_rd`, ..., `key_op`).
    Fine(Action),
}

impl ActionName {
    /// Parse a policy action name. Names are lowercase, as CipherTrust
    /// Manager writes them.
    pub fn parse(name: &str) -> Option<ActionName> {
        match name {
            "read" => Some(ActionName::Read),
            "write" => Some(ActionName::Write),
            "all_ops" => Some(ActionName::AllOps),
            other => Action::from_name(other).map(ActionName::Fine),
        }
    }

    /// The name as written in a policy.
    pub const fn name(self) -> &'static str {
        match self {
            ActionName::Read => "read",
            ActionName::Write => "write",
            ActionName::AllOps => "all_ops",
            ActionName::Fine(a) => a.name(),
        }
    }

    /// The fine actions this name stands for.
    pub const fn expand(self) -> ActionSet {
        match self {
            ActionName::Read => ActionSet::READ,
            ActionName::Write => ActionSet::WRITE,
            ActionName::AllOps => ActionSet::ALL_OPS,
            ActionName::Fine(a) => ActionSet::of(a),
        }
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
            assert_eq!(ActionName::parse(a.name()), Some(ActionName::Fine(a)));
        }
        assert_eq!(Action::from_name("F_RD"), None);
        assert_eq!(ActionName::parse("read"), Some(ActionName::Read));
        assert_eq!(ActionName::parse("all_ops"), Some(ActionName::AllOps));
        assert_eq!(ActionName::parse("reads"), None);
    }

    #[test]
    fn coarse_expansion() {
        // read and write partition all_ops; key_op is in neither.
        assert_eq!(ActionSet::READ.0 & ActionSet::WRITE.0, 0);
        assert_eq!(ActionSet::ALL_OPS, ActionSet::READ.union(ActionSet::WRITE));
        assert!(!ActionSet::ALL_OPS.contains(Action::KeyOp));
        assert_eq!(ActionSet::ALL_OPS.iter().count(), 18);
        let read: Vec<_> = ActionSet::READ.iter().map(Action::name).collect();
        assert_eq!(read, ["f_rd", "f_rd_att", "f_rd_sec", "d_rd", "d_rd_att"]);
        for a in [
            Action::FWr,
            Action::FWrApp,
            Action::FCre,
            Action::DMkdir,
            Action::DChgSec,
        ] {
            assert!(ActionSet::WRITE.contains(a), "{a}");
            assert!(!ActionSet::READ.contains(a), "{a}");
        }
        assert_eq!(
            ActionName::Fine(Action::KeyOp).expand(),
            ActionSet::of(Action::KeyOp)
        );
    }

    #[test]
    fn audit_names_are_distinct() {
        for (i, a) in Action::ALL.iter().enumerate() {
            for b in &Action::ALL[i + 1..] {
                assert_ne!(a.audit_name(), b.audit_name());
            }
        }
        assert_eq!(Action::DRd.audit_name(), "read_dir");
        assert_eq!(Action::FWrApp.audit_name(), "write_app");
    }
}
