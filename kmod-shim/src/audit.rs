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

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Records waiting to be written before new ones are dropped.
pub const QUEUE: usize = 8192;

/// Where audit records go.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub file: Option<PathBuf>,
    pub syslog: bool,
    /// Concise logging window; `None` logs every record.
    pub concise: Option<Duration>,
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
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                )
            }
            None => None,
        };
        let syslog = if opts.syslog {
            UnixDatagram::unbound().ok()
        } else {
            None
        };
        let (d, w) = (dropped.clone(), written.clone());
        std::thread::Builder::new()
            .name("secfs-audit".into())
            .spawn(move || writer(rx, &mut file, syslog, &d, &w))?;
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
        })
    }

    /// Queue the record `line()` unless concise logging already logged
    /// one with the same `key` within its window (then nothing is built
    /// or queued). Without concise logging every record is queued.
    pub fn record_concise(&self, key: impl Hash, line: impl FnOnce() -> String) {
        let Some(c) = &self.concise else {
            self.record(line());
            return;
        };
        let h = c.hasher.hash_one(key);
        let fresh = |t: &Instant| t.elapsed() < c.window;
        let seen = || c.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen().get(&h).is_some_and(fresh) {
            c.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Marked as logged only once it is queued: a record the full queue
        // dropped does not hide the next one.
        if self.record(line()) {
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
    while let Ok(line) = rx.recv() {
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
        };
        for _ in 0..5 {
            a.record("x".into());
        }
        assert_eq!(a.dropped(), 4);
    }
}
