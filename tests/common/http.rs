//! A small HTTP/1.1 server for registry tests: a hostile registry, a Bearer-token front and a
//! counting proxy in front of the real distribution server. One request per connection
//! (`Connection: close`), so clients never reuse a connection the handler closed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the handler answers.
pub enum Reply {
    /// Status, headers, body (Content-Length is added).
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// Announces `announced` bytes, sends `body`, then closes the connection.
    Truncated(u16, Vec<(String, String)>, Vec<u8>, u64),
    /// Bytes sent as they are (a proxied response).
    Raw(Vec<u8>),
    /// Never answers (until the server stops).
    Stall,
    /// A 200 without Content-Length whose body never ends (until the client hangs up).
    Endless,
}

impl Reply {
    pub fn json(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply::Full(
            status,
            vec![("Content-Type".into(), content_type.into())],
            body.to_vec(),
        )
    }
}

/// The server; stops accepting when dropped.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let handler = handler.clone();
                let stop = stop2.clone();
                std::thread::spawn(move || serve(conn, &*handler, &stop));
            }
        });
        Server { port, stop }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, handler: &dyn Fn(&Request) -> Reply, stop: &AtomicBool) {
    let Some(req) = read_request(&conn) else {
        return;
    };
    let mut out = conn;
    match handler(&req) {
        Reply::Full(status, headers, body) => {
            let _ = write_head(&mut out, status, &headers, body.len() as u64);
            let _ = out.write_all(&body);
        }
        Reply::Truncated(status, headers, body, announced) => {
            let _ = write_head(&mut out, status, &headers, announced);
            let _ = out.write_all(&body);
        }
        Reply::Raw(bytes) => {
            let _ = out.write_all(&bytes);
        }
        Reply::Endless => {
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            if out.write_all(head.as_bytes()).is_ok() {
                let chunk = vec![0u8; 1 << 16];
                while !stop.load(Ordering::SeqCst) && out.write_all(&chunk).is_ok() {}
            }
        }
        Reply::Stall => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let _ = out.flush();
}

fn write_head(
    out: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    len: u64,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// Sends `req` to `backend` (without its Authorization header) and returns the raw response.
pub fn forward(backend: &str, req: &Request) -> Reply {
    let mut s = TcpStream::connect(backend).unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        if k != "authorization" && k != "connection" {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&req.body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    // The Host header went through unchanged, so Locations the backend builds point at the front.
    Reply::Raw(resp)
}
