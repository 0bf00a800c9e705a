//! Audit records: a bounded queue drained by one thread that appends them to
//! a log file and sends them to syslog. Queueing never blocks the caller;
//! when the queue is full the record is dropped and counted, and the count
//! is reported in the log as soon as there is room again.
//!
//! Concise logging (as in CTE): a decision is logged once per window per
//! (user, process, resource, class of access, verdict), where the classes
//! are read, write, attribute read, directory listing and other; repeats
//! within the window are dropped *before* they are queued (so they cost no
//! formatting and never fill the queue), and counted.
//!
//! Rate limiting (always on unless disabled): at most `limit` records per
//! `window` for one (matching rule, process). A process that triggers an
//! audited rule in a loop cannot fill the disk nor push other processes'
//! records out of the queue: past the limit its records are counted, not
//! queued, and when its window ends (on its next record, or at the
//! writer's periodic sweep, within about a second) one line says how many
//! were suppressed, for which rule and process:
//! `CGP2603W: [SecFS, 0] [AUDIT] 1234 records suppressed (rate limit 200
//! per 10s) for Policy rule 1 Process[pid=42 /usr/bin/cat]`. Other
//! processes, and other rules for the same process, keep their own budget.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Open a log file (audit, secfs, vmd) for appending, creating it `0600`.
/// Logs name users, programs and files: an existing log readable or
/// writable by others (or writable by its group) is tightened to `0640` at
/// most, so the group keeps read access an administrator gave it and
/// nobody else has any. A symlink at `path` is refused (`O_NOFOLLOW`), and
/// so is anything but a regular file.
pub fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let mode = m.permissions().mode() & 0o7777;
    if mode & !0o640 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o640))?;
    }
    Ok(f)
}

/// Records waiting to be written before new ones are dropped.
pub const QUEUE: usize = 8192;

/// Where audit records go.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub file: Option<PathBuf>,
    pub syslog: bool,
    /// Concise logging window; `None` logs every record.
    pub concise: Option<Duration>,
    /// Rate limit per (rule, process): at most this many records per
    /// window; `None` disables it. [`DEFAULT_RATE_LIMIT`] by default.
    pub rate_limit: Option<(u32, Duration)>,
}

/// The default rate limit per (rule, process).
pub const DEFAULT_RATE_LIMIT: (u32, Duration) = (200, Duration::from_secs(10));

/// One (rule, process) over its current window.
#[derive(Debug)]
struct Flood {
    start: Instant,
    count: u32,
    suppressed: u64,
    /// When the last record was suppressed.
    last: Instant,
    /// Who, for the summary line (built at the first suppression).
    label: String,
}

/// A rate-limit key: the matching rule (if any), the process's pid and
/// start time.
type LimitKey = (Option<u32>, u32, u64);

/// Per-(rule, process) rate limiting state.
#[derive(Debug)]
struct Limiter {
    limit: u32,
    window: Duration,
    floods: Mutex<HashMap<LimitKey, Flood>>,
    suppressed: AtomicU64,
}

/// (Rule, process) pairs tracked before idle ones are forgotten; when all
/// are active, new pairs are not limited (records are never lost for want
/// of room here).
const LIMIT_KEYS: usize = 16_384;

impl Limiter {
    fn summary(&self, f: &Flood) -> String {
        format!(
            "CGP2603W: [SecFS, 0] [AUDIT] {} records suppressed (rate limit {} per {}s) for {}",
            f.suppressed,
            self.limit,
            self.window.as_secs(),
            f.label
        )
    }

    /// Whether a record for `key` may be queued, and a summary line of
    /// its previous window to queue first.
    fn admit(&self, key: LimitKey, label: impl FnOnce() -> String) -> (bool, Option<String>) {
        let now = Instant::now();
        let mut m = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&key) && m.len() >= LIMIT_KEYS {
            // Sweep idle keys; if all are active, do not track this one.
            m.retain(|_, f| now.duration_since(f.start) < self.window || f.suppressed > 0);
            if m.len() >= LIMIT_KEYS {
                return (true, None);
            }
        }
        let f = m.entry(key).or_insert(Flood {
            start: now,
            count: 0,
            suppressed: 0,
            last: now,
            label: String::new(),
        });
        let mut summary = None;
        if now.duration_since(f.start) >= self.window {
            if f.suppressed > 0 {
                summary = Some(self.summary(f));
            }
            *f = Flood {
                start: now,
                count: 0,
                suppressed: 0,
                last: now,
                label: std::mem::take(&mut f.label),
            };
        }
        if f.count < self.limit {
            f.count += 1;
            return (true, summary);
        }
        if f.suppressed == 0 {
            f.label = label();
        }
        f.suppressed += 1;
        f.last = now;
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        (false, summary)
    }

    /// Summaries of floods that ended (nothing suppressed for a second)
    /// or whose window ended; keys whose window ended are forgotten. A
    /// flood that goes on is summarised once per window.
    fn sweep(&self) -> Vec<String> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut m = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, f| {
            let window_over = now.duration_since(f.start) >= self.window;
            if f.suppressed > 0
                && (window_over || now.duration_since(f.last) >= Duration::from_secs(1))
            {
                out.push(self.summary(f));
                // The window's budget stays spent.
                f.suppressed = 0;
            }
            !window_over
        });
        out
    }
}

/// What kind of access a record is about, for concise logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditClass {
    Read,
    Write,
    ReadAttr,
    Dir,
    Other,
}

/// Concise-logging state: when each key was last logged. Keys are hashed
/// with a per-process random key, so nobody can craft a path whose record
/// hides another's.
#[derive(Debug)]
struct Concise {
    window: Duration,
    hasher: RandomState,
    seen: Mutex<HashMap<u64, Instant>>,
    suppressed: AtomicU64,
}

/// Keys remembered before expired ones are swept (and, if still full,
/// everything is forgotten: at worst a record is logged twice).
const CONCISE_KEYS: usize = 65_536;

/// The sending side, shared by all worker threads (clones share one queue).
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: Arc<Mutex<Option<SyncSender<String>>>>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    concise: Option<Arc<Concise>>,
    limiter: Option<Arc<Limiter>>,
}

impl Auditor {
    /// Start the writer thread.
    pub fn start(opts: AuditOptions) -> std::io::Result<Auditor> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let mut file = match &opts.file {
            Some(p) => {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)?;
                }
                Some(open_log(p)?)
            }
            None => None,
        };
        let syslog = if opts.syslog {
            UnixDatagram::unbound().ok()
        } else {
            None
        };
        let limiter = opts
            .rate_limit
            .filter(|&(n, _)| n > 0)
            .map(|(limit, window)| {
                Arc::new(Limiter {
                    limit,
                    window,
                    floods: Mutex::new(HashMap::new()),
                    suppressed: AtomicU64::new(0),
                })
            });
        let (d, w, l) = (dropped.clone(), written.clone(), limiter.clone());
        std::thread::Builder::new()
            .name("secfs-audit".into())
            .spawn(move || writer(rx, &mut file, syslog, &d, &w, l.as_deref()))?;
        Ok(Auditor {
            tx: Arc::new(Mutex::new(Some(tx))),
            dropped,
            written,
            concise: opts.concise.map(|window| {
                Arc::new(Concise {
                    window,
                    hasher: RandomState::new(),
                    seen: Mutex::new(HashMap::new()),
                    suppressed: AtomicU64::new(0),
                })
            }),
            limiter,
        })
    }

    /// [`Auditor::record_concise`] for a policy decision, also rate
    /// limited per `(rule, pid, start time)` (see the module doc);
    /// `process` names the process in the summary line.
    pub fn record_decision(
        &self,
        (rule, pid, start, process): (Option<u32>, u32, u64, &[u8]),
        key: impl Hash,
        line: impl FnOnce() -> String,
    ) {
        let Some(l) = &self.limiter else {
            self.record_concise(key, line);
            return;
        };
        self.concise_then(key, || {
            let (ok, summary) = l.admit((rule, pid, start), || {
                format!(
                    "Policy rule {} Process[pid={pid} {}]",
                    rule.map_or_else(|| "none".to_owned(), |r| r.to_string()),
                    String::from_utf8_lossy(process)
                )
            });
            if let Some(s) = summary {
                self.record(s);
            }
            // A suppressed record is still marked as logged for concise
            // logging: its repeats are duplicates of a counted record.
            ok.then(line)
        });
    }

    /// Records the rate limit left out.
    pub fn rate_limited(&self) -> u64 {
        self.limiter
            .as_ref()
            .map_or(0, |l| l.suppressed.load(Ordering::Relaxed))
    }

    /// Queue the record `line()` unless concise logging already logged
    /// one with the same `key` within its window (then nothing is built
    /// or queued). Without concise logging every record is queued.
    pub fn record_concise(&self, key: impl Hash, line: impl FnOnce() -> String) {
        self.concise_then(key, || Some(line()));
    }

    /// [`Auditor::record_concise`] where `line` may decline to give a
    /// record (the rate limit counted it instead).
    fn concise_then(&self, key: impl Hash, line: impl FnOnce() -> Option<String>) {
        let Some(c) = &self.concise else {
            if let Some(l) = line() {
                self.record(l);
            }
            return;
        };
        let h = c.hasher.hash_one(key);
        let fresh = |t: &Instant| t.elapsed() < c.window;
        let seen = || c.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen().get(&h).is_some_and(fresh) {
            c.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Marked as logged only once it is queued (or counted by the rate
        // limit): a record the full queue dropped does not hide the next
        // one.
        if line().is_none_or(|l| self.record(l)) {
            let mut seen = seen();
            if seen.len() >= CONCISE_KEYS {
                seen.retain(|_, t| fresh(t));
                if seen.len() >= CONCISE_KEYS {
                    seen.clear();
                }
            }
            seen.insert(h, Instant::now());
        }
    }

    /// Records concise logging left out.
    pub fn suppressed(&self) -> u64 {
        self.concise
            .as_ref()
            .map_or(0, |c| c.suppressed.load(Ordering::Relaxed))
    }

    /// Queue a record; never blocks. Whether it was queued (a full queue
    /// drops it and counts the drop).
    pub fn record(&self, line: String) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else { return false };
        match tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written (after concise-logging suppression).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stop accepting records and let the writer drain the queue.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Civil UTC date and time of a Unix time: (year, month, day, hour,
/// minute, second), by Howard Hinnant's days-from-civil inverse.
pub fn civil_utc(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

fn timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, day, h, mi, s) = civil_utc(d.as_secs() as i64);
    format!(
        "{y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

fn writer(
    rx: Receiver<String>,
    file: &mut Option<std::fs::File>,
    syslog: Option<UnixDatagram>,
    dropped: &AtomicU64,
    written: &AtomicU64,
    limiter: Option<&Limiter>,
) {
    let mut reported_drops = 0;
    let mut emit = |line: &str| {
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{} {line}", timestamp());
        }
        if let Some(s) = &syslog {
            // <38> = facility LOG_AUTH (4) * 8 + severity LOG_INFO (6).
            let _ = s.send_to(format!("<38>secfs: {line}").as_bytes(), "/dev/log");
        }
    };
    let mut swept = Instant::now();
    loop {
        // Summaries of floods that ended, about once a second even when
        // nothing else is logged.
        let next = rx.recv_timeout(Duration::from_secs(1));
        if let Some(l) = limiter
            && swept.elapsed() >= Duration::from_secs(1)
        {
            for s in l.sweep() {
                emit(&s);
            }
            swept = Instant::now();
        }
        let line = match next {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let d = dropped.load(Ordering::Relaxed);
        if d > reported_drops {
            emit(&format!(
                "CGP2602W: [SecFS, 0] [AUDIT] {} audit records dropped (queue full)",
                d - reported_drops
            ));
            reported_drops = d;
        }
        emit(&line);
        written.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(l) = limiter {
        // Closing: whatever was suppressed is reported.
        let mut m = l.floods.lock().unwrap_or_else(|e| e.into_inner());
        for f in m.values().filter(|f| f.suppressed > 0) {
            emit(&l.summary(f));
        }
        m.clear();
    }
    if let Some(f) = file.as_mut() {
        let _ = f.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reach_the_file_and_concise_logging_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let a = Auditor::start(AuditOptions {
            file: Some(p.clone()),
            syslog: false,
            concise: Some(Duration::from_secs(60)),
            rate_limit: None,
        })
        .unwrap();
        // Same user, process, file and class: one line, even when the
        // lines differ (the match code, say); another class is logged.
        a.record_concise((0u32, "/bin/cat", "/f", AuditClass::Read), || {
            "CGP2601I: one".into()
        });
        a.record_concise((0u32, "/bin/cat", "/f", AuditClass::Read), || {
            "CGP2601I: one again".into()
        });
        a.record_concise((0u32, "/bin/cat", "/f", AuditClass::Write), || {
            "CGP2601I: two".into()
        });
        a.close();
        let t = Instant::now();
        while a.written() < 2 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("CGP2601I: one").count(), 1, "{text}");
        assert_eq!(a.suppressed(), 1);
        assert_eq!(text.matches("CGP2601I: two").count(), 1, "{text}");
        assert!(text.starts_with("20"), "timestamped: {text}");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = sync_channel::<String>(1);
        let a = Auditor {
            tx: Arc::new(Mutex::new(Some(tx))),
            dropped: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            concise: None,
            limiter: None,
        };
        for _ in 0..5 {
            a.record("x".into());
        }
        assert_eq!(a.dropped(), 4);
    }

    #[test]
    fn logs_are_created_private_and_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let new = dir.path().join("new.log");
        drop(open_log(&new).unwrap());
        assert_eq!(mode(&new), 0o600);
        for (before, after) in [
            (0o666, 0o640),
            (0o644, 0o640),
            (0o604, 0o600),
            (0o640, 0o640),
            (0o600, 0o600),
        ] {
            let p = dir.path().join(format!("old{before:o}.log"));
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(before)).unwrap();
            drop(open_log(&p).unwrap());
            assert_eq!(mode(&p), after, "{before:o}");
        }
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&new, &link).unwrap();
        assert!(open_log(&link).is_err());
        assert!(open_log(dir.path()).is_err());
    }

    #[test]
    fn floods_are_rate_limited_per_rule_and_process_and_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let a = Auditor::start(AuditOptions {
            file: Some(p.clone()),
            syslog: false,
            concise: None,
            rate_limit: Some((5, Duration::from_millis(300))),
        })
        .unwrap();
        // One process floods rule 1; another process, and the same
        // process under rule 2, keep their own budgets.
        for i in 0..100 {
            a.record_decision((Some(1), 42, 7, b"/bin/flood"), i, || format!("flood {i}"));
        }
        a.record_decision((Some(1), 43, 7, b"/bin/other"), 0, || "other".into());
        a.record_decision((Some(2), 42, 7, b"/bin/flood"), 0, || "rule two".into());
        assert_eq!(a.rate_limited(), 95);
        // The writer's sweep reports the flood once its window is over.
        let t = Instant::now();
        let text = loop {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if text.contains("suppressed") || t.elapsed() > Duration::from_secs(5) {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(text.matches("flood ").count(), 5, "{text}");
        assert!(
            text.contains("other") && text.contains("rule two"),
            "{text}"
        );
        assert!(
            text.contains(
                "CGP2603W: [SecFS, 0] [AUDIT] 95 records suppressed (rate limit 5 per 0s) \
                 for Policy rule 1 Process[pid=42 /bin/flood]"
            ),
            "{text}"
        );
        // A new window admits records again.
        a.record_decision((Some(1), 42, 7, b"/bin/flood"), 0, || "after".into());
        a.close();
        std::thread::sleep(Duration::from_millis(200));
        assert!(std::fs::read_to_string(&p).unwrap().contains("after"));
    }
}
