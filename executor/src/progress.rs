//! Build progress in BuildKit's plain format: one numbered vertex per step, its output lines
//! with elapsed time, and `CACHED` / `DONE 0.3s` / `ERROR` lines. Safe to use from the stage
//! threads at once.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Where progress goes.
pub struct Progress {
    next: AtomicUsize,
    out: Mutex<Box<dyn Write + Send>>,
    quiet: bool,
}

/// One vertex (step) being reported.
pub struct Vertex<'a> {
    p: &'a Progress,
    pub n: usize,
    start: Instant,
}

impl Progress {
    pub fn new(out: Box<dyn Write + Send>, quiet: bool) -> Progress {
        Progress {
            next: AtomicUsize::new(1),
            out: Mutex::new(out),
            quiet,
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        let mut o = self.out.lock().expect("progress lock");
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    }

    /// Starts a vertex named like BuildKit's (`[stage 2/4] RUN ...`).
    pub fn start(&self, name: &str) -> Vertex<'_> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.line(&format!("#{n} {name}"));
        Vertex {
            p: self,
            n,
            start: Instant::now(),
        }
    }
}

impl Vertex<'_> {
    pub fn output(&self, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        for l in text.lines() {
            self.p.line(&format!("#{} {t:.3} {l}", self.n));
        }
    }
    pub fn log(&self, text: &str) {
        self.p.line(&format!("#{} {text}", self.n));
    }
    pub fn cached(self) {
        self.p.line(&format!("#{} CACHED", self.n));
    }
    pub fn done(self) {
        let t = self.start.elapsed().as_secs_f64();
        self.p.line(&format!("#{} DONE {t:.1}s", self.n));
    }
    pub fn error(self, msg: &str) {
        let t = self.start.elapsed().as_secs_f64();
        self.p.line(&format!("#{} ERROR: {msg} ({t:.1}s)", self.n));
    }
}
