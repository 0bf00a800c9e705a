//! Host settings (CTE's client settings) and the authenticated / untrusted
//! decision for a process.
//!
//! # Text form
//!
//! One entry per line, `|keyword|PATH`:
//!
//! * `|authenticator|PATH`: a program that authenticates users (`sshd`,
//!   `login`, `su`, ...). Processes descending from it *after it changed
//!   identity* are authenticated.
//! * `|trust|PATH`: a program trusted as is: the process running it and its
//!   descendants are authenticated under whatever identity they run, with
//!   no identity change needed. `|trust|*` trusts every process.
//! * `|path_no_trust|PATH`: the process running it and all its descendants
//!   are untrusted, whatever authenticators or `|trust|` entries say (CTE:
//!   `|path_no_trust|` overrides every authenticator, and `|trust|*` does not
//!   disable it).
//! * `|protect|PATH`: CTE's protected file (kept, listed, not used by the
//!   policy engine; enforcing it is the file system's job).
//! * `|no_applykey|traced` and `|no_applykey|ld_env` (GuardFS; CTE has no
//!   equivalent): a process that is being traced (`TracerPid` is not 0:
//!   a debugger or `strace` can read and change its memory), or whose
//!   environment names `LD_PRELOAD`, `LD_LIBRARY_PATH` or `LD_AUDIT`
//!   (code of the user's choosing loaded into it), gets no key: a rule's
//!   `applykey` does not apply to it, so a permit gives it the
//!   ciphertext view and a write that needs the key is refused, as for
//!   any permit without `applykey`. See [`HostSettings::withholds_key`].
//!
//! Blank lines and lines starting with `#` are ignored; surrounding spaces
//! are trimmed. Paths are absolute, normalized and compared exactly with the
//! executable path the kernel reports (`/proc/PID/exe`) — and `|trust|`
//! and `|authenticator|` match only a path the caller verified (see
//! [`Ancestor::verified`]) — so write resolved
//! paths (`/usr/bin/su`, not `/bin/su` on merged-`/usr` systems) or have the
//! loader resolve them. Keywords are lowercase. CTE's `|authenticator_euid|`
//! (authenticate on an effective-uid change) is not supported: it is not
//! in the reference this crate follows, and GuardFS observes identity
//! changes by uid and login uid only; it is rejected like any unknown
//! keyword, so a settings file relying on it fails loudly.
//!
//! # Identity changes after authentication
//!
//! CTE evaluates user-set rules against the identity an authenticator
//! established. GuardFS evaluates the uid/gids of the request, so a
//! process that changed identity *after* authenticating through a program
//! that is not an authenticator (`sudo`, a set-uid binary) would otherwise
//! be judged as an authenticated user it never authenticated as; instead
//! it is not authenticated (see [`HostSettings::classify`]). List `sudo`
//! as an authenticator to have its users count as authenticated.

use crate::error::HostSettingsError;
use crate::path::path_problem;

/// The keywords of host settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKeyword {
    /// `|authenticator|`.
    Authenticator,
    /// `|trust|`.
    Trust,
    /// `|path_no_trust|`.
    PathNoTrust,
    /// `|protect|`.
    Protect,
    /// `|no_applykey|` (its values are conditions, not paths).
    NoApplykey,
}

impl HostKeyword {
    /// The keyword as written between the bars.
    pub const fn name(self) -> &'static str {
        match self {
            HostKeyword::Authenticator => "authenticator",
            HostKeyword::Trust => "trust",
            HostKeyword::PathNoTrust => "path_no_trust",
            HostKeyword::Protect => "protect",
            HostKeyword::NoApplykey => "no_applykey",
        }
    }

    fn parse(s: &str) -> Option<HostKeyword> {
        [
            HostKeyword::Authenticator,
            HostKeyword::Trust,
            HostKeyword::PathNoTrust,
            HostKeyword::Protect,
            HostKeyword::NoApplykey,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// Parsed host settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    authenticators: Vec<Box<[u8]>>,
    trusted: Vec<Box<[u8]>>,
    trust_all: bool,
    no_trust: Vec<Box<[u8]>>,
    protected: Vec<Box<[u8]>>,
    no_key_if: Taint,
}

/// Signs that code other than the program's own may run in a process
/// (see `|no_applykey|` in the module doc). The caller observes them
/// (`TracerPid` and the environment in /proc); this crate does no I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Taint {
    /// The process is being traced (`ptrace`).
    pub traced: bool,
    /// Its environment sets `LD_PRELOAD`, `LD_LIBRARY_PATH` or `LD_AUDIT`.
    pub ld_env: bool,
}

impl Taint {
    /// The environment variables that make [`Taint::ld_env`].
    pub const LD_VARS: [&'static [u8]; 3] = [b"LD_PRELOAD", b"LD_LIBRARY_PATH", b"LD_AUDIT"];

    /// Whether `environ` (`NAME=value` entries separated by NUL bytes, as
    /// in `/proc/PID/environ`) names one of [`Taint::LD_VARS`], whatever
    /// its value (the loader reads an empty one too). Allocation-free.
    pub fn env_has_ld_vars(environ: &[u8]) -> bool {
        environ.split(|&b| b == 0).any(|entry| {
            Taint::LD_VARS
                .iter()
                .any(|v| entry.len() > v.len() && entry.starts_with(v) && entry[v.len()] == b'=')
        })
    }
}

/// One process in an ancestry list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ancestor<'a> {
    /// Its executable (as `/proc/PID/exe` reports it, without a
    /// ` (deleted)` suffix).
    pub exe: &'a [u8],
    /// Whether the caller verified that `exe` names the file the process
    /// actually runs (the same device and inode as the path resolves to in
    /// the agent's mount namespace, not deleted). Path text alone can be
    /// faked (a bind mount in a private mount namespace, a replaced
    /// binary): `|trust|` and `|authenticator|` entries match only a
    /// verified executable; `|path_no_trust|` matches either (it only
    /// restricts, so it fails closed).
    pub verified: bool,
    /// Whether this process changed identity relative to its parent: it
    /// called a set*id function or exec'd a set-uid program, so its
    /// credentials differ from its parent's. The caller decides how to
    /// observe it; a change of the audit login uid (`/proc/PID/loginuid`,
    /// set by `pam_loginuid` in `sshd`, `login`, `su`) also counts, which
    /// covers root logins where the uid stays 0.
    pub identity_changed: bool,
}

/// What host settings make of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessTrust {
    /// Authenticated: user-set rules may match it.
    Authenticated,
    /// Not authenticated (CTE's default for every process).
    NotAuthenticated,
    /// Untrusted by `|path_no_trust|`: never authenticated.
    Untrusted,
}

impl ProcessTrust {
    /// Whether the process counts as authenticated.
    pub fn is_authenticated(self) -> bool {
        self == ProcessTrust::Authenticated
    }
}

impl HostSettings {
    /// Parse the text form (see the module doc).
    ///
    /// # Errors
    /// The first bad line, by 1-based line number.
    pub fn parse(text: &str) -> Result<HostSettings, HostSettingsError> {
        let mut hs = HostSettings::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let malformed = || HostSettingsError::Malformed {
                line,
                text: entry.to_owned(),
            };
            let rest = entry.strip_prefix('|').ok_or_else(malformed)?;
            let (keyword, path) = rest.split_once('|').ok_or_else(malformed)?;
            let keyword =
                HostKeyword::parse(keyword).ok_or_else(|| HostSettingsError::UnknownKeyword {
                    line,
                    keyword: keyword.to_owned(),
                })?;
            let path = path.trim();
            if path.is_empty() {
                return Err(HostSettingsError::MissingPath {
                    line,
                    keyword: keyword.name(),
                });
            }
            if keyword == HostKeyword::NoApplykey {
                match path {
                    "traced" => hs.no_key_if.traced = true,
                    "ld_env" => hs.no_key_if.ld_env = true,
                    _ => {
                        return Err(HostSettingsError::UnknownCondition {
                            line,
                            value: path.to_owned(),
                        });
                    }
                }
                continue;
            }
            if path == "*" {
                if keyword != HostKeyword::Trust {
                    return Err(HostSettingsError::WildcardNotAllowed {
                        line,
                        keyword: keyword.name(),
                    });
                }
                hs.trust_all = true;
                continue;
            }
            if !path.starts_with('/') {
                return Err(HostSettingsError::RelativePath {
                    line,
                    path: path.to_owned(),
                });
            }
            if let Some(reason) = path_problem(path.as_bytes()) {
                return Err(HostSettingsError::InvalidPath {
                    line,
                    path: path.to_owned(),
                    reason,
                });
            }
            let list = match keyword {
                HostKeyword::Authenticator => &mut hs.authenticators,
                HostKeyword::Trust => &mut hs.trusted,
                HostKeyword::PathNoTrust => &mut hs.no_trust,
                HostKeyword::Protect => &mut hs.protected,
                HostKeyword::NoApplykey => unreachable!("handled above"),
            };
            let path: Box<[u8]> = path.as_bytes().into();
            if !list.contains(&path) {
                list.push(path);
            }
        }
        Ok(hs)
    }

    /// The paths listed under a keyword (`|trust|*` is reported by
    /// [`HostSettings::trusts_everything`], not here; `|no_applykey|` has
    /// no paths, see [`HostSettings::no_applykey_conditions`]).
    pub fn paths(&self, keyword: HostKeyword) -> impl Iterator<Item = &[u8]> {
        let list: &[Box<[u8]>] = match keyword {
            HostKeyword::Authenticator => &self.authenticators,
            HostKeyword::Trust => &self.trusted,
            HostKeyword::PathNoTrust => &self.no_trust,
            HostKeyword::Protect => &self.protected,
            HostKeyword::NoApplykey => &[],
        };
        list.iter().map(|p| &**p)
    }

    /// The conditions `|no_applykey|` lines set (both `false`: none).
    pub fn no_applykey_conditions(&self) -> Taint {
        self.no_key_if
    }

    /// Whether a process showing `taint` must get no key under these
    /// settings: a rule's `applykey` does not apply to it.
    pub fn withholds_key(&self, taint: Taint) -> bool {
        (self.no_key_if.traced && taint.traced) || (self.no_key_if.ld_env && taint.ld_env)
    }

    /// Whether `|trust|*` is set.
    pub fn trusts_everything(&self) -> bool {
        self.trust_all
    }

    /// Decide whether a process is authenticated, from its ancestry:
    /// `ancestry` runs from the oldest ancestor (e.g. `init`) to the
    /// process itself, last.
    ///
    /// 1. If any entry runs a `|path_no_trust|` program: [`Untrusted`].
    /// 2. Else if `|trust|*` is set, or any entry runs a `|trust|` program:
    ///    [`Authenticated`] (under whatever identity its descendants take).
    /// 3. Else, walking from the oldest entry: an entry `i` running an
    ///    `|authenticator|` program whose identity changed in it
    ///    (`ancestry[i]`) or in its child (`ancestry[i + 1]`, the fork that
    ///    switches to the user before exec'ing the shell) makes the rest of
    ///    the chain authenticated. A later identity change in a program
    ///    that is *not* an authenticator (`sudo`, a set-uid binary, a
    ///    daemon dropping privileges) ends that: CTE evaluates the identity
    ///    the authenticator established, and the process now runs as
    ///    someone else, so it is [`NotAuthenticated`] (fail closed) until
    ///    an authenticator changes identity again below it.
    /// 4. Otherwise [`NotAuthenticated`] (CTE trusts no process by default;
    ///    a daemon started by an authenticator without an identity change,
    ///    or an empty ancestry, is not authenticated).
    ///
    /// Allocation-free.
    ///
    /// [`Untrusted`]: ProcessTrust::Untrusted
    /// [`Authenticated`]: ProcessTrust::Authenticated
    /// [`NotAuthenticated`]: ProcessTrust::NotAuthenticated
    pub fn classify(&self, ancestry: &[Ancestor<'_>]) -> ProcessTrust {
        self.classify_from(None, ancestry)
    }

    /// [`classify`](Self::classify) for the part of an ancestry below a
    /// process whose trust is already known: `inherited` is that process's
    /// trust (the caller recorded it while the process was alive, so the
    /// mark survives the process exiting and its descendants being
    /// reparented); `ancestry` runs from its child down to the process
    /// being classified. `None` means nothing is inherited.
    ///
    /// An inherited [`Untrusted`](ProcessTrust::Untrusted) is final; an
    /// inherited [`Authenticated`](ProcessTrust::Authenticated) counts as
    /// an authenticator's identity change just above `ancestry[0]`.
    pub fn classify_from(
        &self,
        inherited: Option<ProcessTrust>,
        ancestry: &[Ancestor<'_>],
    ) -> ProcessTrust {
        let listed = |list: &[Box<[u8]>], exe: &[u8]| list.iter().any(|p| **p == *exe);
        // |trust| and |authenticator| vouch for a program: only for the
        // file it really is.
        let vouched = |list: &[Box<[u8]>], a: &Ancestor<'_>| a.verified && listed(list, a.exe);
        if inherited == Some(ProcessTrust::Untrusted)
            || ancestry.iter().any(|a| listed(&self.no_trust, a.exe))
        {
            return ProcessTrust::Untrusted;
        }
        if self.trust_all || ancestry.iter().any(|a| vouched(&self.trusted, a)) {
            return ProcessTrust::Authenticated;
        }
        let mut authenticated = inherited == Some(ProcessTrust::Authenticated);
        // Index up to which identity changes are the authenticator's own.
        let mut established: Option<usize> = None;
        for (i, a) in ancestry.iter().enumerate() {
            if vouched(&self.authenticators, a) {
                let child_changed = ancestry.get(i + 1).is_some_and(|c| c.identity_changed);
                if a.identity_changed || child_changed {
                    authenticated = true;
                    established = Some(if child_changed { i + 1 } else { i });
                    continue;
                }
            }
            if a.identity_changed && authenticated && established.is_none_or(|e| i > e) {
                authenticated = false;
                established = None;
            }
        }
        if authenticated {
            ProcessTrust::Authenticated
        } else {
            ProcessTrust::NotAuthenticated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anc(exe: &str, changed: bool) -> Ancestor<'_> {
        Ancestor {
            exe: exe.as_bytes(),
            verified: true,
            identity_changed: changed,
        }
    }

    const SETTINGS: &str = "\
# default Linux authenticators
|authenticator|/usr/sbin/sshd
|authenticator|/usr/bin/su

  |authenticator|/usr/bin/login   
|path_no_trust|/usr/bin/ksh
|trust|/usr/sbin/cron
|protect|/etc/passwd
";

    #[test]
    fn parses_text_form() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        let auth: Vec<_> = hs.paths(HostKeyword::Authenticator).collect();
        assert_eq!(
            auth,
            [&b"/usr/sbin/sshd"[..], b"/usr/bin/su", b"/usr/bin/login"]
        );
        assert_eq!(hs.paths(HostKeyword::PathNoTrust).count(), 1);
        assert_eq!(hs.paths(HostKeyword::Trust).count(), 1);
        assert_eq!(hs.paths(HostKeyword::Protect).count(), 1);
        assert!(!hs.trusts_everything());
        assert_eq!(HostSettings::parse("").unwrap(), HostSettings::default());
        assert!(
            HostSettings::parse("|trust|*\r\n")
                .unwrap()
                .trusts_everything()
        );
    }

    #[test]
    fn errors_have_line_numbers() {
        use HostSettingsError as E;
        type Check = fn(&E) -> bool;
        let cases: &[(&str, Check)] = &[
            ("\n\nauthenticator /usr/sbin/sshd", |e| {
                matches!(e, E::Malformed { line: 3, .. })
            }),
            ("|authenticator/usr/sbin/sshd", |e| {
                matches!(e, E::Malformed { line: 1, .. })
            }),
            (
                "# c\n|authenticator_euid|/usr/sbin/vsftpd",
                |e| matches!(e, E::UnknownKeyword { line: 2, keyword } if keyword == "authenticator_euid"),
            ),
            ("|AUTHENTICATOR|/usr/sbin/sshd", |e| {
                matches!(e, E::UnknownKeyword { line: 1, .. })
            }),
            ("|trust|", |e| {
                matches!(
                    e,
                    E::MissingPath {
                        line: 1,
                        keyword: "trust"
                    }
                )
            }),
            ("|authenticator|usr/sbin/sshd", |e| {
                matches!(e, E::RelativePath { line: 1, .. })
            }),
            ("|path_no_trust|/bin/../bin/ksh", |e| {
                matches!(e, E::InvalidPath { line: 1, .. })
            }),
            ("|authenticator|*", |e| {
                matches!(
                    e,
                    E::WildcardNotAllowed {
                        line: 1,
                        keyword: "authenticator"
                    }
                )
            }),
        ];
        for (text, check) in cases {
            let err = HostSettings::parse(text).unwrap_err();
            assert!(check(&err), "{text:?} gave {err:?}");
            assert!(err.to_string().starts_with("line "), "{err}");
        }
    }

    #[test]
    fn authenticated_after_identity_change() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        // sshd forks a child that switches to the user and execs bash.
        let ssh_login = [
            anc("/usr/lib/systemd/systemd", false),
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/bash", true),
            anc("/usr/bin/cat", false),
        ];
        assert_eq!(hs.classify(&ssh_login), ProcessTrust::Authenticated);
        // sshd's privilege-separated child that itself changed identity.
        let privsep = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/sbin/sshd", true),
            anc("/usr/bin/bash", false),
        ];
        assert_eq!(hs.classify(&privsep), ProcessTrust::Authenticated);
        // su from a user's shell.
        let su = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/bash", true),
            anc("/usr/bin/su", true),
            anc("/usr/bin/bash", true),
        ];
        assert_eq!(hs.classify(&su), ProcessTrust::Authenticated);
    }

    #[test]
    fn not_authenticated_without_change_or_authenticator() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        // A daemon spawned by sshd without any identity change.
        let no_change = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/bash", false),
            anc("/usr/bin/cat", false),
        ];
        assert_eq!(hs.classify(&no_change), ProcessTrust::NotAuthenticated);
        // An identity change far below the authenticator does not count.
        let late = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/bash", false),
            anc("/usr/bin/sudo", true),
        ];
        assert_eq!(hs.classify(&late), ProcessTrust::NotAuthenticated);
        // No authenticator at all.
        let boot = [
            anc("/usr/lib/systemd/systemd", false),
            anc("/usr/sbin/nginx", true),
        ];
        assert_eq!(hs.classify(&boot), ProcessTrust::NotAuthenticated);
        assert_eq!(hs.classify(&[]), ProcessTrust::NotAuthenticated);
        // With no host settings, nothing is authenticated.
        assert_eq!(
            HostSettings::default().classify(&ssh_like()),
            ProcessTrust::NotAuthenticated
        );
    }

    fn ssh_like() -> [Ancestor<'static>; 2] {
        [anc("/usr/sbin/sshd", false), anc("/usr/bin/bash", true)]
    }

    #[test]
    fn path_no_trust_overrides_everything() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        // su from an untrusted shell stays untrusted.
        let from_ksh = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/ksh", true),
            anc("/usr/bin/su", true),
            anc("/usr/bin/bash", true),
        ];
        assert_eq!(hs.classify(&from_ksh), ProcessTrust::Untrusted);
        assert!(!hs.classify(&from_ksh).is_authenticated());
        // |trust|* does not disable |path_no_trust|.
        let all = HostSettings::parse("|trust|*\n|path_no_trust|/usr/sbin/sshd").unwrap();
        assert_eq!(all.classify(&ssh_like()), ProcessTrust::Untrusted);
        assert_eq!(
            all.classify(&[anc("/usr/sbin/cron", false)]),
            ProcessTrust::Authenticated
        );
    }

    #[test]
    fn identity_change_after_authentication_by_a_non_authenticator_fails_closed() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        // alice logs in over ssh, then sudo makes her root: the process
        // no longer runs as the identity sshd established.
        let sudo = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/bash", true),
            anc("/usr/bin/sudo", true),
            anc("/usr/bin/cat", false),
        ];
        assert_eq!(hs.classify(&sudo), ProcessTrust::NotAuthenticated);
        // su is an authenticator: it authenticates again.
        let su_after_sudo = [
            anc("/usr/sbin/sshd", false),
            anc("/usr/bin/bash", true),
            anc("/usr/bin/sudo", true),
            anc("/usr/bin/su", true),
            anc("/usr/bin/bash", true),
        ];
        assert_eq!(hs.classify(&su_after_sudo), ProcessTrust::Authenticated);
    }

    #[test]
    fn inherited_trust_survives_a_lost_ancestry() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        // The untrusted ksh exited; its child was reparented, but its trust
        // was recorded while ksh was alive.
        let below = [anc("/usr/bin/bash", false), anc("/usr/bin/cat", false)];
        assert_eq!(
            hs.classify_from(Some(ProcessTrust::Untrusted), &below),
            ProcessTrust::Untrusted
        );
        assert_eq!(
            hs.classify_from(Some(ProcessTrust::Authenticated), &below),
            ProcessTrust::Authenticated
        );
        assert_eq!(
            hs.classify_from(None, &below),
            ProcessTrust::NotAuthenticated
        );
        // An inherited authentication ends at a later identity change.
        let changed = [anc("/usr/bin/sudo", true), anc("/usr/bin/cat", false)];
        assert_eq!(
            hs.classify_from(Some(ProcessTrust::Authenticated), &changed),
            ProcessTrust::NotAuthenticated
        );
    }

    #[test]
    fn trust_entries() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        let cron_job = [
            anc("/usr/lib/systemd/systemd", false),
            anc("/usr/sbin/cron", false),
            anc("/usr/bin/backup", false),
        ];
        assert_eq!(hs.classify(&cron_job), ProcessTrust::Authenticated);
    }

    #[test]
    fn unverified_executables_are_never_vouched_for() {
        let hs = HostSettings::parse(SETTINGS).unwrap();
        let fake = |exe: &'static str, changed: bool| Ancestor {
            verified: false,
            ..anc(exe, changed)
        };
        // A program at /usr/sbin/cron's path that is not that file (a bind
        // mount in a private mount namespace, a deleted binary).
        assert_eq!(
            hs.classify(&[fake("/usr/sbin/cron", false), anc("/usr/bin/cat", false)]),
            ProcessTrust::NotAuthenticated
        );
        assert_eq!(
            hs.classify(&[fake("/usr/sbin/sshd", false), anc("/usr/bin/bash", true)]),
            ProcessTrust::NotAuthenticated
        );
        // |path_no_trust| restricts: the path text is enough.
        assert_eq!(
            hs.classify(&[anc("/usr/sbin/sshd", false), fake("/usr/bin/ksh", true)]),
            ProcessTrust::Untrusted
        );
        // |trust|* needs no path at all.
        let all = HostSettings::parse("|trust|*").unwrap();
        assert_eq!(
            all.classify(&[fake("/x", false)]),
            ProcessTrust::Authenticated
        );
    }

    #[test]
    fn no_applykey_conditions() {
        let hs = HostSettings::parse("|no_applykey|traced\n|no_applykey| ld_env \n").unwrap();
        assert_eq!(
            hs.no_applykey_conditions(),
            Taint {
                traced: true,
                ld_env: true
            }
        );
        assert_eq!(hs.paths(HostKeyword::NoApplykey).count(), 0);
        let traced = Taint {
            traced: true,
            ld_env: false,
        };
        let preloaded = Taint {
            traced: false,
            ld_env: true,
        };
        assert!(hs.withholds_key(traced) && hs.withholds_key(preloaded));
        assert!(!hs.withholds_key(Taint::default()));
        let only = HostSettings::parse("|no_applykey|traced").unwrap();
        assert!(only.withholds_key(traced) && !only.withholds_key(preloaded));
        // Without the setting, nothing changes.
        assert!(!HostSettings::default().withholds_key(Taint {
            traced: true,
            ld_env: true
        }));
        for bad in [
            "|no_applykey|",
            "|no_applykey|/usr/bin/gdb",
            "|no_applykey|*",
        ] {
            assert!(HostSettings::parse(bad).is_err(), "{bad}");
        }
        let e = HostSettings::parse("\n|no_applykey|strace").unwrap_err();
        assert!(
            matches!(e, HostSettingsError::UnknownCondition { line: 2, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn ld_variables_in_an_environment() {
        let has = Taint::env_has_ld_vars;
        assert!(has(b"PATH=/bin\0LD_PRELOAD=/tmp/x.so\0"));
        assert!(has(b"LD_LIBRARY_PATH=\0"));
        assert!(has(b"A=1\0LD_AUDIT=a.so"));
        assert!(!has(b""));
        assert!(!has(b"PATH=/bin\0X_LD_PRELOAD=1\0LD_PRELOADX=1\0"));
        assert!(!has(b"MSG=LD_PRELOAD=x\0LD_PRELOAD\0"));
    }
}
