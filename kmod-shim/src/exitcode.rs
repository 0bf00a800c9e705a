//! Exit codes of `secfs`: a contract for scripts, listed in `secfs --help`.

/// Success.
pub const OK: i32 = 0;
/// Any failure without a more specific code.
pub const FAILURE: i32 = 1;
/// Bad command line (clap's own code).
pub const USAGE: i32 = 2;
/// Not running as root.
pub const NOT_ROOT: i32 = 10;
/// /dev/fuse is missing or cannot be opened.
pub const NO_FUSE: i32 = 11;
/// The directory does not exist or is not a directory.
pub const BAD_DIR: i32 = 12;
/// The directory is already a live GuardPoint.
pub const ALREADY_MOUNTED: i32 = 13;
/// The key file is missing, unreadable, malformed, or must not be overwritten.
pub const BAD_KEY: i32 = 14;
/// mount(2) or the FUSE handshake failed.
pub const MOUNT_FAILED: i32 = 15;
/// `umount`: the directory is not a secfs mount.
pub const NOT_MOUNTED: i32 = 16;
/// `umount`: files are still open on the GuardPoint.
pub const BUSY: i32 = 17;
/// The policy or host-settings file is missing or invalid.
pub const BAD_POLICY: i32 = 18;
/// Guard refused: the directory stays reachable through another mount
/// point or mount namespace where the GuardPoint could not be attached.
pub const UNREACHABLE: i32 = 19;

/// The table printed in `--help`.
pub const TABLE: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 10 not root, 11 no /dev/fuse, \
12 bad directory, 13 already mounted, 14 bad key file, 15 mount failed, 16 not mounted, 17 busy, 18 bad policy, 19 reachable elsewhere";
