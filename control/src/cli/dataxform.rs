//! `dataxform`: CTE's offline data transformation, file by file through
//! the mounted GuardPoint. It walks the GuardPoint and, for each regular
//! file, sends secfs one ioctl on the file's directory; secfs checks that
//! the caller is root and that the policy permits `key_op` with the key,
//! then transforms the file crash-safely (see `TRANSFORM.md`). This command
//! never reads or writes file contents itself, and needs no vmd.
//!
//! ```text
//! dataxform --rekey --gp PATH [--print_stat] [--preserve_modified_time]
//!           [--cleanup] [--scan] [-y] [--json]
//! dataxform --shallow|--deep --gp PATH [same options]
//! ```
//!
//! `--rekey`: every file to its key rule's transformation key (the
//! policy's `data_transform_rules`; encrypt with `clear_key` as the current
//! key, decrypt with it as the transformation key, convert modes with a
//! transformation key of another mode). `--deep`: every encrypted file to
//! the newest version of its own key with a new data key; `--shallow`:
//! the same, rewrapping only the header. Files already where they should be
//! are skipped (the authenticated header says so), so running the command
//! again after a crash or an interruption finishes the job.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guardfs_shim::stack::xform::{Op, Outcome, Status};
use guardfs_shim::xform_ioctl::{self, Ask, ONLINE, PRESERVE_TIMES, Request, SCAN};
use nix::fcntl::OFlag;
use serde_json::json;

use super::{CmdResult, FAILED, Failure, USAGE, require_root};

const USAGE_TEXT: &str = "usage: dataxform --rekey|--shallow|--deep --gp PATH [--print_stat] [--preserve_modified_time] [--cleanup] [--scan] [-y] [--json]
                 [--offline] [--max_rate MB/s] [--cpu PERCENT]
       dataxform --suspend|--resume --gp PATH
  --rekey                   every file to its key rule's transformation key (data_transform_rules)
  --deep                    every encrypted file to the newest version of its key, new data key
  --shallow                 the same, rewrapping only the header (contents untouched)
  --gp PATH                 the GuardPoint (mounted)
  --scan                    report what would change and the space it needs; change nothing
  --print_stat              print files, bytes, rate and skipped files at the end
  --preserve_modified_time  keep each file's access and modification times
  --cleanup                 remove leftover transformation files once every file was reached
  -y                        do not ask for confirmation
  --json                    one JSON object per line (files, progress, summary)
  --offline                 no online rekey: every file is held for its whole transformation
  --max_rate MB/s           at most this many MB per second
  --cpu PERCENT             at most this share of one CPU (1..100)
  --suspend / --resume      pause / continue the transformation running on the GuardPoint
Large files and files open in applications are rekeyed online when the mode stays (--deep,
or --rekey to a key of the same mode): a step of 1 MiB at a time, applications go on.
Exit codes: 0 every file transformed or already done, 1 some skipped or failed, 2 usage, 3 not root.";

/// Attempts for a file in use before it is reported and skipped.
const IN_USE_ATTEMPTS: u32 = 3;

#[derive(Debug)]
struct Opts {
    gp: PathBuf,
    op: Op,
    scan: bool,
    print_stat: bool,
    preserve_times: bool,
    cleanup: bool,
    yes: bool,
    json: bool,
    /// Every file through the batch (no online rekey).
    offline: bool,
    /// `--max_rate`: MB/s.
    max_rate: Option<f64>,
    /// `--cpu`: percent of one CPU.
    cpu: Option<u32>,
}

/// `--suspend` / `--resume`: act on the run going on, transform nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Suspend,
    Resume,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure(USAGE, format!("{}\n{USAGE_TEXT}", msg.into()))
}

fn parse(args: &[String]) -> Result<Option<(Opts, Option<Control>)>, Failure> {
    let mut op = None;
    let mut control = None;
    let (mut offline, mut max_rate, mut cpu) = (false, None, None);
    let mut gp = None;
    let (mut scan, mut print_stat, mut preserve_times, mut cleanup, mut yes, mut json) =
        (false, false, false, false, false, false);
    let mut it = args.iter().skip(1);
    let set_op = |o: Op, op: &mut Option<Op>| -> Result<(), Failure> {
        if op.replace(o).is_some_and(|p| p != o) {
            return Err(usage("--rekey, --shallow and --deep exclude each other"));
        }
        Ok(())
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rekey" => set_op(Op::Rekey, &mut op)?,
            "--deep" => set_op(Op::Deep, &mut op)?,
            "--shallow" => set_op(Op::Shallow, &mut op)?,
            "--gp" => {
                gp = Some(PathBuf::from(
                    it.next().ok_or_else(|| usage("--gp needs a path"))?,
                ))
            }
            s if s.starts_with("--gp=") => gp = Some(PathBuf::from(&s[5..])),
            "--scan" => scan = true,
            "--print_stat" => print_stat = true,
            "--preserve_modified_time" => preserve_times = true,
            "--cleanup" => cleanup = true,
            "-y" | "--yes" => yes = true,
            "--json" => json = true,
            "--offline" => offline = true,
            "--max_rate" => {
                let v = it.next().ok_or_else(|| usage("--max_rate needs MB/s"))?;
                max_rate = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| usage(format!("--max_rate {v}: not a positive number")))?,
                );
            }
            "--cpu" => {
                let v = it.next().ok_or_else(|| usage("--cpu needs a percentage"))?;
                cpu = Some(
                    v.trim_end_matches('%')
                        .parse::<u32>()
                        .ok()
                        .filter(|p| (1..=100).contains(p))
                        .ok_or_else(|| usage(format!("--cpu {v}: not a percentage 1..100")))?,
                );
            }
            "--suspend" => control = Some(Control::Suspend),
            "--resume" => control = Some(Control::Resume),
            "-h" | "--help" => return Ok(None),
            other => return Err(usage(format!("unknown argument {other}"))),
        }
    }
    let gp = gp.ok_or_else(|| usage("--gp PATH is required"))?;
    if control.is_some() && op.is_some() {
        return Err(usage(
            "--suspend and --resume act on the run going on; give no operation",
        ));
    }
    let op = match control {
        Some(_) => Op::Deep,
        None => op.ok_or_else(|| usage("say what to do: --rekey, --shallow or --deep"))?,
    };
    Ok(Some((
        Opts {
            gp,
            op,
            scan,
            print_stat,
            preserve_times,
            cleanup,
            yes,
            json,
            offline,
            max_rate,
            cpu,
        },
        control,
    )))
}

/// One regular file found by the walk.
struct Found {
    dir: PathBuf,
    name: std::ffi::OsString,
    size: u64,
}

/// The regular files under `gp` on its own file system (no symlinks
/// followed, no other mounts entered); directories that cannot be listed
/// are returned as problems.
fn walk(gp: &Path) -> (Vec<Found>, Vec<(PathBuf, String)>) {
    let dev = std::fs::metadata(gp).map(|m| m.dev()).unwrap_or(0);
    let (mut files, mut problems) = (Vec::new(), Vec::new());
    let mut stack = vec![gp.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                problems.push((dir, format!("cannot list: {e}")));
                continue;
            }
        };
        let mut names: Vec<_> = rd.filter_map(Result::ok).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && m.dev() == dev {
                stack.push(e.path());
            } else if m.is_file() {
                files.push(Found {
                    dir: dir.clone(),
                    name: e.file_name(),
                    size: m.len(),
                });
            }
        }
    }
    (files, problems)
}

fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// An exclusive, non-blocking flock on the GuardPoint's root directory,
/// held while it lives.
fn lock_guard_point(gp: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, Failure> {
    let dir =
        std::fs::File::open(gp).map_err(|e| Failure(FAILED, format!("{}: {e}", gp.display())))?;
    nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            Failure(
                FAILED,
                format!(
                    "another dataxform is running on {}; one transformation per GuardPoint at a time",
                    gp.display()
                ),
            )
        } else {
            Failure(FAILED, format!("{}: cannot lock: {e}", gp.display()))
        }
    })
}

/// One request; the outcome per name (`Err(errno)` for a name the request
/// failed for), and the cleanup count.
#[allow(clippy::type_complexity)]
fn ask(dir: &OwnedFd, req: &Request) -> Result<(Vec<Result<Outcome, i32>>, u64), String> {
    let mut buf = req.encode().map_err(str::to_owned)?;
    guardfs_shim::sys::ioctl_buf(dir.as_fd(), xform_ioctl::CMD, &mut buf[..]).map_err(|e| {
        if e.0 == nix::libc::ENOTTY {
            "secfs does not know the transformation request (an older secfs?)".to_owned()
        } else if e.0 == nix::libc::EPERM {
            "refused: only root may transform".to_owned()
        } else {
            format!("ioctl failed: {}", nix::errno::Errno::from_raw(e.0).desc())
        }
    })?;
    xform_ioctl::decode_reply(&buf).map_err(str::to_owned)
}

/// Files of one directory sent in one request: at most this many bytes
/// of contents (a larger file goes alone), so that no file waits long.
const BATCH_BYTES: u64 = 64 << 20;

/// Consecutive files of `files` (sorted by directory) in batches.
fn batches(files: &[Found]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < files.len() {
        let mut end = start;
        let (mut bytes, mut names) = (0u64, 0usize);
        while end < files.len()
            && files[end].dir == files[start].dir
            && xform_ioctl::fits(end - start + 1, names + 1 + files[end].name.len())
            && (end == start || bytes + files[end].size <= BATCH_BYTES)
        {
            bytes += files[end].size;
            names += 1 + files[end].name.len();
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Done => "transformed",
        Status::Current => "already done",
        Status::InUse => "in use",
        Status::Refused => "refused",
        Status::NoRule => "no transformation rule",
        Status::NoSpace => "no space",
        Status::NotRegular => "not a regular file",
        Status::Clear => "clear",
        Status::WouldChange => "would transform",
        Status::NoKey => "key not available",
        Status::Online => "rekeying online",
    }
}

/// Whether a skip is a problem (the job is not complete).
fn is_problem(s: Status) -> bool {
    matches!(
        s,
        Status::InUse | Status::Refused | Status::NoSpace | Status::NoKey
    )
}

#[derive(Default)]
struct Tally {
    examined: u64,
    changed: u64,
    current: u64,
    untouched: u64,
    bytes: u64,
    needed: u64,
    skipped: Vec<(PathBuf, String)>,
}

pub fn dataxform(args: Vec<String>) -> CmdResult {
    let Some((o, control)) = parse(&args)? else {
        println!("{USAGE_TEXT}");
        return Ok(());
    };
    require_root()?;
    let gp =
        o.gp.canonicalize()
            .map_err(|e| Failure(FAILED, format!("{}: {e}", o.gp.display())))?;
    if let Some(c) = control {
        return suspend_or_resume(&gp, c);
    }
    match nix::sys::statfs::statfs(&gp) {
        Ok(st) if st.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC => {}
        Ok(_) => {
            return Err(Failure(
                FAILED,
                format!(
                    "{} is not a guarded GuardPoint (secfs is not mounted on it)",
                    gp.display()
                ),
            ));
        }
        Err(e) => return Err(Failure(FAILED, format!("{}: {e}", gp.display()))),
    }
    // One transformation per GuardPoint at a time (as CTE UserSpace has
    // it): an exclusive flock on the GuardPoint's root for the whole run.
    let _one_at_a_time = if o.scan {
        None
    } else {
        Some(lock_guard_point(&gp)?)
    };
    let log = Log::open(&gp);
    // A suspend flag left by a run that died would pause this one: only a
    // run in progress can be suspended (and this one holds the lock).
    if !o.scan
        && let Some(p) = suspend_path(&gp)
    {
        let _ = std::fs::remove_file(p);
    }
    let (files, problems) = walk(&gp);
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    if !o.scan && !o.yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(
                "this changes every file of the GuardPoint; add -y to run without a terminal",
            ));
        }
        eprint!(
            "Transform {} files ({} bytes) in {} ({})? Applications should not use them meanwhile. [y/N] ",
            files.len(),
            total_bytes,
            gp.display(),
            op_name(o.op)
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(Failure(FAILED, "not confirmed; nothing changed".into()));
        }
    }
    log.line(&format!(
        "start {} {} files={} bytes={}{}",
        op_name(o.op),
        gp.display(),
        files.len(),
        total_bytes,
        if o.scan { " (scan)" } else { "" }
    ));
    let started = Instant::now();
    let wall_start = unix_now();
    let progress = Progress::new(&gp);
    let record = |state: &str, files_done: usize, bytes_done: u64, t: &Tally| {
        if o.scan {
            return;
        }
        progress.write(json!({
            "guard_point": gp.to_string_lossy(),
            "operation": op_name(o.op),
            "state": state,
            "files_total": files.len(),
            "files_done": files_done,
            "bytes_total": total_bytes,
            "bytes_done": bytes_done,
            "files_transformed": t.changed,
            "files_already_done": t.current,
            "skipped": t.skipped.len(),
        }));
    };
    let bar = (!o.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut t = Tally::default();
    for (path, why) in &problems {
        t.skipped.push((path.clone(), why.clone()));
    }
    let flags = (if o.scan { SCAN } else { 0 })
        | (if o.preserve_times { PRESERVE_TIMES } else { 0 })
        | (if o.offline { 0 } else { ONLINE });
    let mut run = Run {
        o: &o,
        log: &log,
        bar: bar.as_ref(),
        record: &record,
        pacer: Pacer::new(&o),
        suspend: suspend_path(&gp),
        quiet: false,
        done_files: 0,
        bytes_done: 0,
        last_record: Instant::now(),
        last_progress: Instant::now(),
        n_files: files.len(),
        total_bytes,
    };
    record("In Progress", 0, 0, &t);
    run.pass(&files, flags, &mut t);
    // A key rotated while the run went on leaves files behind the newest
    // version: look again (the header says), and relaunch while any is.
    for relaunch in 1..=MAX_RELAUNCHES {
        if o.scan || !t.skipped.is_empty() {
            break;
        }
        let mut check = Tally::default();
        run.quiet = true;
        run.pass(&files, flags | SCAN, &mut check);
        run.quiet = false;
        if check.changed == 0 {
            break;
        }
        log.line(&format!(
            "{} files are behind their target (a key rotated during the run): pass {}",
            check.changed,
            relaunch + 1
        ));
        if o.json {
            emit(&json!({"event": "relaunch", "behind": check.changed, "pass": relaunch + 1}));
        } else {
            eprintln!(
                "dataxform: {} files are behind their target (a key rotated during the run): another pass",
                check.changed
            );
        }
        let mut again = Tally::default();
        run.done_files = 0;
        run.bytes_done = 0;
        if let Some(b) = run.bar {
            b.set_position(0);
        }
        run.pass(&files, flags, &mut again);
        t.changed += again.changed;
        t.bytes += again.bytes;
        t.skipped.extend(again.skipped);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut cleaned = None;
    if o.cleanup && !o.scan {
        if t.skipped.is_empty() {
            let req = Request {
                ask: Ask::Cleanup { before: wall_start },
                flags: 0,
                names: Vec::new(),
            };
            match open_dir(&gp)
                .map_err(|e| e.to_string())
                .and_then(|d| ask(&d, &req))
            {
                Ok((_, removed)) => cleaned = Some(removed),
                Err(why) => t.skipped.push((gp.clone(), format!("cleanup: {why}"))),
            }
        } else {
            eprintln!("dataxform: --cleanup not done: some files were not reached");
        }
    }
    record(
        if t.skipped.is_empty() {
            "Completed"
        } else {
            "Completed with errors"
        },
        files.len(),
        total_bytes,
        &t,
    );
    if let Some(p) = suspend_path(&gp) {
        let _ = std::fs::remove_file(p);
    }
    summary(&o, &gp, &t, secs, cleaned);
    log.line(&format!(
        "end {} changed={} current={} untouched={} skipped={} bytes={} secs={secs:.1}",
        gp.display(),
        t.changed,
        t.current,
        t.untouched,
        t.skipped.len(),
        t.bytes
    ));
    if t.skipped.is_empty() {
        Ok(())
    } else {
        Err(Failure(
            FAILED,
            format!(
                "{} file(s) or directories skipped; run the same command again to finish",
                t.skipped.len()
            ),
        ))
    }
}

/// Key rotations a run follows before it stops with files behind.
const MAX_RELAUNCHES: u32 = 3;
/// Plaintext bytes per online step request (secfs re-encrypts them a
/// step at a time, each step under its own lock).
const STEP_BUDGET: u64 = 8 << 20;

/// Throttling (`--max_rate`, `--cpu`).
struct Pacer {
    /// Bytes per second.
    rate: Option<f64>,
    /// Share of one CPU (0..1]: the run sleeps `took * (1/share - 1)`
    /// after each request.
    share: Option<f64>,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(o: &Opts) -> Pacer {
        Pacer {
            rate: o.max_rate.map(|mb| mb * 1e6),
            share: o.cpu.map(|p| f64::from(p) / 100.0),
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// The budget of one online step request.
    fn budget(&self) -> u64 {
        match self.rate {
            // About a quarter second's worth, at least one step.
            Some(r) => ((r / 4.0) as u64).clamp(64 << 10, STEP_BUDGET),
            None => STEP_BUDGET,
        }
    }

    /// After a request that moved `bytes` in `took`.
    fn after(&mut self, bytes: u64, took: Duration) {
        self.bytes += bytes;
        if let Some(r) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / r);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        if let Some(share) = self.share
            && share < 1.0
        {
            std::thread::sleep(took.mul_f64(1.0 / share - 1.0));
        }
    }
}

/// One run's state across its passes.
struct Run<'a> {
    o: &'a Opts,
    log: &'a Log,
    bar: Option<&'a indicatif::ProgressBar>,
    record: &'a dyn Fn(&str, usize, u64, &Tally),
    pacer: Pacer,
    /// While this file exists the run pauses (`dataxform --suspend`).
    suspend: Option<PathBuf>,
    /// A verification scan: no reports, progress or log lines.
    quiet: bool,
    done_files: usize,
    bytes_done: u64,
    last_record: Instant,
    last_progress: Instant,
    n_files: usize,
    total_bytes: u64,
}

impl Run<'_> {
    /// Pause while suspended (the status says so meanwhile).
    fn wait_if_suspended(&mut self, t: &Tally) {
        let Some(p) = &self.suspend else { return };
        if !p.exists() {
            return;
        }
        self.log.line("suspended");
        if !self.o.json {
            eprintln!("dataxform: suspended (dataxform --resume --gp ... to go on)");
        } else {
            emit(&json!({"event": "suspended"}));
        }
        while p.exists() {
            (self.record)("Suspended", self.done_files, self.bytes_done, t);
            std::thread::sleep(Duration::from_millis(200));
        }
        self.log.line("resumed");
        if self.o.json {
            emit(&json!({"event": "resumed"}));
        }
        (self.record)("In Progress", self.done_files, self.bytes_done, t);
    }

    /// Step the online rekey of `name` in `dir` to its end.
    fn online(&mut self, dfd: &OwnedFd, name: &[u8], t: &Tally) -> Result<Outcome, String> {
        let op = if self.o.op == Op::Rekey {
            Op::Rekey
        } else {
            Op::Deep
        };
        let mut seen = 0u64;
        let mut first_size: Option<u64> = None;
        loop {
            self.wait_if_suspended(t);
            let began = Instant::now();
            let req = Request {
                ask: Ask::Step {
                    op,
                    budget: self.pacer.budget(),
                },
                flags: 0,
                names: vec![name.to_vec()],
            };
            let (results, _) = ask(dfd, &req)?;
            let out = results
                .into_iter()
                .next()
                .ok_or("no answer")?
                .map_err(|e| format!("failed: {}", nix::errno::Errno::from_raw(e).desc()))?;
            let moved = out.lower_bytes.saturating_sub(seen);
            seen = seen.max(out.lower_bytes);
            self.bytes_done += moved;
            if let Some(b) = self.bar {
                b.inc(moved);
            }
            self.pacer.after(moved, began.elapsed());
            if self.last_record.elapsed() >= Duration::from_secs(1) {
                self.last_record = Instant::now();
                (self.record)("In Progress", self.done_files, self.bytes_done, t);
            }
            if out.status != Status::Online {
                return Ok(out);
            }
            // A file appended to faster than steps re-encrypt it would
            // keep the run here for ever (the mark chases the end): once
            // the mark is far past the size the file had, give up on it
            // for this run (its record stays; the next run goes on).
            let first = *first_size.get_or_insert(out.size);
            if seen > first.saturating_mul(4).saturating_add(64 << 20) {
                return Err(format!(
                    "in use: written to faster than it is rekeyed ({} of {} bytes done); run again later",
                    out.lower_bytes, out.size
                ));
            }
        }
    }

    /// One pass over `files`.
    fn pass(&mut self, files: &[Found], flags: u8, t: &mut Tally) {
        let o = self.o;
        for range in batches(files) {
            self.wait_if_suspended(t);
            if !self.quiet && self.last_record.elapsed() >= Duration::from_secs(1) {
                self.last_record = Instant::now();
                (self.record)("In Progress", self.done_files, self.bytes_done, t);
            }
            let batch = &files[range.clone()];
            let dir = &batch[0].dir;
            let dfd = match open_dir(dir) {
                Ok(fd) => fd,
                Err(e) => {
                    for f in batch {
                        t.examined += 1;
                        let why = format!("cannot open its directory: {e}");
                        if !self.quiet {
                            report(o, &f.dir.join(&f.name), None, &why);
                        }
                        t.skipped.push((f.dir.join(&f.name), why));
                    }
                    continue;
                }
            };
            let began = Instant::now();
            // Files in use are asked for again, three attempts in all.
            let mut pending: Vec<usize> = (0..batch.len()).collect();
            let mut outcomes: Vec<Option<Result<Outcome, String>>> = vec![None; batch.len()];
            for attempt in 1..=IN_USE_ATTEMPTS {
                let req = Request {
                    ask: Ask::Files(o.op),
                    flags,
                    names: pending
                        .iter()
                        .map(|&k| batch[k].name.as_bytes().to_vec())
                        .collect(),
                };
                let mut again = Vec::new();
                match ask(&dfd, &req) {
                    Ok((results, _)) => {
                        for (&k, r) in pending.iter().zip(results) {
                            let r = r.map_err(|e| {
                                format!("failed: {}", nix::errno::Errno::from_raw(e).desc())
                            });
                            if matches!(&r, Ok(out) if out.status == Status::InUse)
                                && attempt < IN_USE_ATTEMPTS
                            {
                                again.push(k);
                            }
                            outcomes[k] = Some(r);
                        }
                    }
                    Err(why) => {
                        for &k in &pending {
                            outcomes[k] = Some(Err(why.clone()));
                        }
                    }
                }
                if again.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
                pending = again;
            }
            // Paced by what the batch rewrote (online files pace themselves).
            let rewritten: u64 = outcomes
                .iter()
                .filter_map(|r| match r {
                    Some(Ok(out)) if out.status == Status::Done => Some(out.size),
                    _ => None,
                })
                .sum();
            self.pacer.after(rewritten, began.elapsed());
            for (f, out) in batch.iter().zip(outcomes) {
                let path = f.dir.join(&f.name);
                let mut out = out.unwrap_or_else(|| Err("no answer".into()));
                let before = self.bytes_done;
                if matches!(&out, Ok(x) if x.status == Status::Online) {
                    out = self.online(&dfd, f.name.as_bytes(), t);
                }
                t.examined += 1;
                if !self.quiet {
                    self.done_files += 1;
                    let rest = f.size.saturating_sub(self.bytes_done - before);
                    self.bytes_done += rest;
                    if let Some(b) = self.bar {
                        b.inc(rest);
                    }
                }
                let out = match out {
                    Ok(out) => out,
                    Err(why) => {
                        t.skipped.push((path.clone(), why.clone()));
                        if !self.quiet {
                            report(o, &path, None, &why);
                        }
                        continue;
                    }
                };
                match out.status {
                    Status::Done | Status::WouldChange => {
                        t.changed += 1;
                        t.bytes += out.size;
                        t.needed = t.needed.max(out.lower_bytes);
                    }
                    Status::Current => t.current += 1,
                    Status::Clear | Status::NoRule | Status::NotRegular => t.untouched += 1,
                    _ => {}
                }
                if is_problem(out.status) {
                    let why = format!("{}: {}", status_name(out.status), out.why);
                    t.skipped.push((path.clone(), why));
                }
                if self.quiet {
                    continue;
                }
                if out.status == Status::Done {
                    self.log
                        .line(&format!("{}: {} -> {}", path.display(), out.from, out.to));
                }
                report(o, &path, Some(&out), "");
            }
            if self.quiet {
                continue;
            }
            if let Some(b) = self.bar {
                b.set_message(format!("{}/{} files", self.done_files, self.n_files));
            } else if o.json
                && (self.last_progress.elapsed() >= Duration::from_secs(1)
                    || self.done_files == self.n_files)
            {
                self.last_progress = Instant::now();
                emit(&json!({
                    "event": "progress",
                    "files_done": self.done_files,
                    "files_total": self.n_files,
                    "bytes_done": self.bytes_done,
                    "bytes_total": self.total_bytes,
                }));
            }
        }
    }
}

/// `dataxform --suspend|--resume --gp PATH`.
fn suspend_or_resume(gp: &Path, c: Control) -> CmdResult {
    let path = suspend_path(gp)
        .ok_or_else(|| Failure(FAILED, "the agent's run directory is not available".into()))?;
    let running = super::layout(None)
        .map(|l| {
            statuses(&l).iter().any(|v| {
                v["guard_point"].as_str() == Some(&*gp.to_string_lossy())
                    && matches!(v["state"].as_str(), Some("In Progress" | "Suspended"))
            })
        })
        .unwrap_or(false);
    match c {
        Control::Suspend => {
            if !running {
                return Err(Failure(
                    FAILED,
                    format!("no data transformation is running on {}", gp.display()),
                ));
            }
            crate::state::write_atomic(&path, b"suspended\n", 0o600)
                .map_err(|e| Failure(FAILED, format!("{}: {e}", path.display())))?;
            println!(
                "The data transformation on {} pauses after its current step.",
                gp.display()
            );
        }
        Control::Resume => {
            if std::fs::remove_file(&path).is_err() {
                return Err(Failure(
                    FAILED,
                    format!("no suspended data transformation on {}", gp.display()),
                ));
            }
            println!("The data transformation on {} goes on.", gp.display());
        }
    }
    Ok(())
}

/// The file whose presence suspends the run on `gp`.
fn suspend_path(gp: &Path) -> Option<PathBuf> {
    let l = super::layout(None).ok()?;
    Some(
        l.run_dir
            .join("xform")
            .join(format!("{}.suspend", tag_of(gp))),
    )
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Rekey => "rekey",
        Op::Deep => "deep rekey",
        Op::Shallow => "shallow rekey",
    }
}

fn emit(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
}

fn report(o: &Opts, path: &Path, out: Option<&Outcome>, err: &str) {
    // On a terminal, skipped files are listed in the summary.
    if !o.json {
        return;
    }
    let v = match out {
        Some(out) => json!({
            "event": "file",
            "path": path.to_string_lossy(),
            "status": status_name(out.status),
            "from": out.from,
            "to": out.to,
            "size": out.size,
            "why": out.why,
        }),
        None => json!({
            "event": "file",
            "path": path.to_string_lossy(),
            "status": "failed",
            "why": err,
        }),
    };
    emit(&v);
}

fn summary(o: &Opts, gp: &Path, t: &Tally, secs: f64, cleaned: Option<u64>) {
    let rate = if secs > 0.0 {
        t.bytes as f64 / secs / 1e6
    } else {
        0.0
    };
    if o.json {
        emit(&json!({
            "event": "summary",
            "guard_point": gp.to_string_lossy(),
            "operation": op_name(o.op),
            "scan": o.scan,
            "files_examined": t.examined,
            "files_transformed": if o.scan { 0 } else { t.changed },
            "files_to_transform": if o.scan { t.changed } else { 0 },
            "files_already_done": t.current,
            "files_untouched": t.untouched,
            "bytes": t.bytes,
            "largest_file_space_needed": t.needed,
            "seconds": secs,
            "mb_per_s": rate,
            "cleaned": cleaned,
            "skipped": t.skipped.iter().map(|(p, w)| json!({"path": p.to_string_lossy(), "why": w})).collect::<Vec<_>>(),
        }));
        return;
    }
    if o.scan {
        println!(
            "Scan of {}: {} of {} files would be transformed ({} bytes); {} already done, {} untouched.",
            gp.display(),
            t.changed,
            t.examined,
            t.bytes,
            t.current,
            t.untouched
        );
        println!(
            "Free space needed: {} bytes (the largest file's new size; files are transformed one at a time).",
            t.needed
        );
    } else if o.print_stat {
        println!("Data transformation statistics for {}", gp.display());
        println!("  Operation:            {}", op_name(o.op));
        println!("  Files examined:       {}", t.examined);
        println!("  Files transformed:    {}", t.changed);
        println!("  Files already done:   {}", t.current);
        println!("  Files untouched:      {}", t.untouched);
        println!("  Files skipped:        {}", t.skipped.len());
        println!("  Bytes transformed:    {}", t.bytes);
        println!("  Elapsed:              {secs:.2} s");
        println!("  Rate:                 {rate:.1} MB/s");
        if let Some(n) = cleaned {
            println!("  Leftovers removed:    {n}");
        }
    } else {
        println!(
            "{}: {} files transformed, {} already done, {} skipped.",
            gp.display(),
            t.changed,
            t.current,
            t.skipped.len()
        );
    }
    for (p, why) in &t.skipped {
        println!("  skipped {}: {why}", p.display());
    }
}

/// Progress for `voradmin xform status` and `secfsd -status xform`: one
/// JSON file per GuardPoint in `<run_dir>/xform/`, replaced atomically
/// about once a second and at the end. It stays after the run (and after a
/// crash, where its pid is gone: `Interrupted`), saying how far it got.
struct Progress {
    path: Option<PathBuf>,
    started: u64,
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A file-name tag for the GuardPoint: its path with other characters
/// than letters and digits as `_`, and a digest of the path itself so
/// that `/a-b` and `/a_b` do not share a status record or a suspend flag.
fn tag_of(gp: &Path) -> String {
    let plain: String = gp
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, gp.as_os_str().as_bytes());
    format!("{plain}-{}", hex::encode(&d.as_ref()[..4]))
}

impl Progress {
    fn new(gp: &Path) -> Progress {
        let path = super::layout(None).ok().and_then(|l| {
            let dir = l.run_dir.join("xform");
            std::fs::create_dir_all(&dir).ok()?;
            Some(dir.join(format!("{}.json", tag_of(gp))))
        });
        Progress {
            path,
            started: unix_now(),
        }
    }

    fn write(&self, v: serde_json::Value) {
        let Some(p) = &self.path else { return };
        let mut v = v;
        v["pid"] = json!(std::process::id());
        v["started"] = json!(self.started);
        v["updated"] = json!(unix_now());
        let _ = crate::state::write_atomic(p, v.to_string().as_bytes(), 0o600);
    }
}

/// Whether process `pid` exists (a status record's run, a rule's).
pub(super) fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Every transformation's last progress record: `state` is `In Progress`,
/// `Completed`, `Completed with errors`, or `Interrupted` (in progress,
/// but its process is gone: run the same command again).
pub fn statuses(layout: &crate::state::Layout) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(layout.run_dir.join("xform")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let pid = v["pid"].as_u64().unwrap_or(0);
        if matches!(v["state"].as_str(), Some("In Progress" | "Suspended")) && !alive(pid as u32) {
            v["state"] = json!("Interrupted");
        }
        out.push(v);
    }
    out
}

/// The status table.
pub fn status_table(list: &[serde_json::Value]) -> String {
    if list.is_empty() {
        return "No data transformations".into();
    }
    let w = list
        .iter()
        .map(|v| v["guard_point"].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut lines = vec![format!(
        "{:<w$}  {:<13}  {:<21}  {:>5}  {:>13}  {:>15}  Skipped",
        "GuardPoint", "Operation", "Status", "Done", "Files", "Bytes"
    )];
    for v in list {
        let pct = |done: &str, total: &str| {
            let (d, t) = (
                v[done].as_u64().unwrap_or(0),
                v[total].as_u64().unwrap_or(0),
            );
            (d * 100).checked_div(t).unwrap_or(100)
        };
        lines.push(format!(
            "{:<w$}  {:<13}  {:<21}  {:>4}%  {:>13}  {:>15}  {}",
            v["guard_point"].as_str().unwrap_or(""),
            v["operation"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or(""),
            pct("bytes_done", "bytes_total"),
            format!("{}/{}", v["files_done"], v["files_total"]),
            format!("{}/{}", v["bytes_done"], v["bytes_total"]),
            v["skipped"],
        ));
    }
    lines.join("\n")
}

/// The log in the agent's log directory (CTE: `vordxf_*.log`), when the
/// agent is installed; lines carry no key material (names and versions).
struct Log(Option<std::fs::File>);

impl Log {
    fn open(gp: &Path) -> Log {
        let Ok(layout) = super::layout(None) else {
            return Log(None);
        };
        let path = layout.log_dir.join(format!("vordxf{}.log", tag_of(gp)));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok();
        Log(f)
    }

    fn line(&self, text: &str) {
        if let Some(mut f) = self.0.as_ref() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let _ = writeln!(f, "{now} {text}");
        }
    }
}
