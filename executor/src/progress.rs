//! Build progress like BuildKit's: `plain` prints one numbered line per event (vertex start,
//! output lines with elapsed time, `CACHED`, `DONE 0.3s`, `ERROR`); `tty` redraws a live view
//! (each step with its status and time, and the last lines of running steps' output). Safe to
//! use from the stage threads at once.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tty,
    Quiet,
}

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Running,
    Cached,
    Done(f64),
    Error(f64),
}

struct VertexState {
    name: String,
    start: Instant,
    status: Status,
    tail: Vec<String>,
}

struct Inner {
    out: Box<dyn Write + Send>,
    vertices: Vec<VertexState>,
    drawn_lines: usize,
    last_draw: Option<Instant>,
}

/// Where progress goes.
pub struct Progress {
    mode: Mode,
    started: Instant,
    inner: Mutex<Inner>,
}

/// One vertex (step) being reported.
pub struct Vertex<'a> {
    p: &'a Progress,
    pub n: usize,
    start: Instant,
}

const TAIL: usize = 6;

impl Progress {
    pub fn new(out: Box<dyn Write + Send>, quiet: bool) -> Progress {
        Progress::with_mode(out, if quiet { Mode::Quiet } else { Mode::Plain })
    }

    pub fn with_mode(out: Box<dyn Write + Send>, mode: Mode) -> Progress {
        Progress {
            mode,
            started: Instant::now(),
            inner: Mutex::new(Inner {
                out,
                vertices: Vec::new(),
                drawn_lines: 0,
                last_draw: None,
            }),
        }
    }

    fn plain(&self, s: &str) {
        if self.mode != Mode::Plain {
            return;
        }
        let mut i = self.inner.lock().expect("progress lock");
        let _ = writeln!(i.out, "{s}");
        let _ = i.out.flush();
    }

    /// Redraws the live view (throttled unless `force`).
    fn draw(&self, force: bool) {
        if self.mode != Mode::Tty {
            return;
        }
        let mut i = self.inner.lock().expect("progress lock");
        if !force
            && i.last_draw
                .map(|t| t.elapsed() < Duration::from_millis(100))
                .unwrap_or(false)
        {
            return;
        }
        i.last_draw = Some(Instant::now());
        let done = i
            .vertices
            .iter()
            .filter(|v| v.status != Status::Running)
            .count();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({}/{})",
            self.started.elapsed().as_secs_f64(),
            done,
            i.vertices.len()
        )];
        for v in &i.vertices {
            match &v.status {
                Status::Running => {
                    lines.push(format!(
                        " => {} {:.1}s",
                        v.name,
                        v.start.elapsed().as_secs_f64()
                    ));
                    for t in &v.tail {
                        lines.push(format!(
                            " => => # {}",
                            t.chars().take(120).collect::<String>()
                        ));
                    }
                }
                Status::Cached => lines.push(format!(" => CACHED {}", v.name)),
                Status::Done(t) => lines.push(format!(" => {} {t:.1}s", v.name)),
                Status::Error(t) => {
                    lines.push(format!(" => ERROR {} {t:.1}s", v.name));
                    for t in &v.tail {
                        lines.push(format!(" => => # {t}"));
                    }
                }
            }
        }
        let mut buf = String::new();
        if i.drawn_lines > 0 {
            buf.push_str(&format!("\x1b[{}F", i.drawn_lines));
        }
        for l in &lines {
            buf.push_str("\x1b[2K");
            buf.push_str(l);
            buf.push('\n');
        }
        buf.push_str("\x1b[J");
        i.drawn_lines = lines.len();
        let _ = i.out.write_all(buf.as_bytes());
        let _ = i.out.flush();
    }

    /// Starts a vertex named like BuildKit's (`[stage 2/4] RUN ...`).
    pub fn start(&self, name: &str) -> Vertex<'_> {
        let n = {
            let mut i = self.inner.lock().expect("progress lock");
            i.vertices.push(VertexState {
                name: name.to_string(),
                start: Instant::now(),
                status: Status::Running,
                tail: Vec::new(),
            });
            i.vertices.len()
        };
        self.plain(&format!("#{n} {name}"));
        self.draw(true);
        Vertex {
            p: self,
            n,
            start: Instant::now(),
        }
    }

    fn set(&self, n: usize, status: Status) {
        {
            let mut i = self.inner.lock().expect("progress lock");
            let v = &mut i.vertices[n - 1];
            v.status = status.clone();
            if status != Status::Running && !matches!(status, Status::Error(_)) {
                v.tail.clear();
            }
        }
        self.draw(true);
    }

    fn push_output(&self, n: usize, line: &str) {
        if self.mode == Mode::Tty {
            {
                let mut i = self.inner.lock().expect("progress lock");
                let tail = &mut i.vertices[n - 1].tail;
                tail.push(line.to_string());
                if tail.len() > TAIL {
                    tail.remove(0);
                }
            }
            self.draw(false);
        }
    }
}

impl Vertex<'_> {
    pub fn output(&self, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        for l in text.lines() {
            self.p.plain(&format!("#{} {t:.3} {l}", self.n));
            self.p.push_output(self.n, l);
        }
    }
    pub fn log(&self, text: &str) {
        self.p.plain(&format!("#{} {text}", self.n));
    }
    pub fn cached(self) {
        self.p.plain(&format!("#{} CACHED", self.n));
        self.p.set(self.n, Status::Cached);
    }
    pub fn done(self) {
        let t = self.start.elapsed().as_secs_f64();
        self.p.plain(&format!("#{} DONE {t:.1}s", self.n));
        self.p.set(self.n, Status::Done(t));
    }
    pub fn error(self, msg: &str) {
        let t = self.start.elapsed().as_secs_f64();
        self.p.plain(&format!("#{} ERROR: {msg} ({t:.1}s)", self.n));
        self.p.set(self.n, Status::Error(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines() {
        let b = Buf::default();
        let p = Progress::with_mode(Box::new(b.clone()), Mode::Plain);
        let v = p.start("[s 1/2] RUN x");
        v.output("hello");
        v.done();
        p.start("[s 2/2] COPY a b").cached();
        let out = String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "#1 [s 1/2] RUN x");
        assert!(lines[1].starts_with("#1 0.0") && lines[1].ends_with(" hello"));
        assert!(lines[2].starts_with("#1 DONE "));
        assert_eq!(&lines[3..], &["#2 [s 2/2] COPY a b", "#2 CACHED"]);
    }

    #[test]
    fn tty_view_redraws_in_place() {
        let b = Buf::default();
        let p = Progress::with_mode(Box::new(b.clone()), Mode::Tty);
        let v = p.start("[s 1/1] RUN x");
        v.output("line one");
        v.done();
        let out = String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("\x1b[2K[+] Building"), "{out:?}");
        assert!(out.contains(" => [s 1/1] RUN x"), "{out:?}");
        assert!(out.contains("\x1b[2F"), "no redraw: {out:?}");
    }
}
